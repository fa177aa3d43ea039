// Words and numbers as a person reads them: error messages for every error code the
// server gives, times, durations, sizes and chat names. No DOM.

import { ErrorCode, ConnectionLost, RpcError } from "./protocol.js";

export function formatDuration(seconds) {
  const s = Math.max(1, Math.ceil(seconds));
  if (s < 60) return `${s} s`;
  const minutes = Math.ceil(s / 60);
  if (minutes < 60) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  const rest = minutes % 60;
  return rest ? `${hours} h ${rest} min` : `${hours} h`;
}

export function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(bytes < 10240 ? 1 : 0)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

export function formatTime(ms, now = Date.now()) {
  const date = new Date(ms);
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return new Date(now).toDateString() === date.toDateString() ? time : `${date.toLocaleDateString()} ${time}`;
}

/** "online", "last seen 10:42" or "offline" for a `presence` entry. */
export function presenceText(presence) {
  if (presence.online) return "online";
  return presence.last_seen ? `last seen ${formatTime(presence.last_seen)}` : "offline";
}

export function chatLabel(chat) {
  if (!chat) return "";
  if (chat.kind === "direct") return `@${chat.title}`;
  return chat.title;
}

/** One sentence for a failed call, saying what to do where there is something. */
export function describeError(error, action = "") {
  if (error instanceof ConnectionLost) return "The connection to the server was lost. Try again once it is back.";
  if (!(error instanceof RpcError)) return `Something went wrong: ${error?.message ?? error}`;
  const data = error.data ?? {};
  switch (error.code) {
    case ErrorCode.UNAUTHENTICATED:
      return action === "login" ? "Wrong user name or password." : "You are signed out. Sign in again.";
    case ErrorCode.RATE_LIMITED:
      return action === "login"
        ? `Too many failed sign-ins. Try again in ${formatDuration(data.retry_after ?? 1)}.`
        : `You have sent too many messages here for now. Try again in ${formatDuration(data.retry_after ?? 1)}.`;
    case ErrorCode.BANNED:
      return `You are banned from sending until ${formatTime(data.until ?? 0)} (reported by other users).`;
    case ErrorCode.TOO_LARGE:
      return `Too large: the limit is ${formatSize(data.max ?? 0)}.`;
    case ErrorCode.CONFLICT:
      return action === "register" ? "That user name is taken. Choose another one." : error.message;
    case ErrorCode.NOT_FOUND:
      return action === "join" ? "That link does not work (the owner may have made a new one)." : error.message;
    case ErrorCode.UNAVAILABLE:
      return `The server cannot save anything right now. Try again in ${formatDuration(data.retry_after ?? 1)}.`;
    case ErrorCode.INTERNAL_ERROR:
      return "The server failed to do that (an internal error).";
    default:
      return error.message;
  }
}
