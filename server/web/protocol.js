// The messenger's wire, with no DOM: JSON-RPC 2.0 over one WebSocket
// (https://www.jsonrpc.org/specification), sign-in, automatic reconnect that resumes
// with `login {since}`, events deduplicated by cursor, and an outbox of sends that
// survives lost connections and reloads and posts each message once (`client_id`).
// protocol.md documents the methods and events; this module names none of them but
// `register`, `login`, `logout`, `send`, the upload calls and `presence` (the one
// event with no cursor of its own).

export const ErrorCode = Object.freeze({
  PARSE_ERROR: -32700,
  INVALID_REQUEST: -32600,
  METHOD_NOT_FOUND: -32601,
  INVALID_PARAMS: -32602,
  INTERNAL_ERROR: -32603,
  UNAUTHENTICATED: -32001,
  FORBIDDEN: -32002,
  NOT_FOUND: -32003,
  RATE_LIMITED: -32004,
  BANNED: -32005,
  TOO_LARGE: -32006,
  CONFLICT: -32007,
  UNAVAILABLE: -32008,
});

/** An error object the server answered with: `code`, `message`, `data`. */
export class RpcError extends Error {
  constructor(error) {
    super(error.message);
    this.name = "RpcError";
    this.code = error.code;
    this.data = error.data ?? null;
  }
}

/** The connection went away before the reply came (the call may or may not have run). */
export class ConnectionLost extends Error {
  constructor(message = "The connection to the server was lost") {
    super(message);
    this.name = "ConnectionLost";
  }
}

/** `ws://` or `wss://` to the server that served the page at `location`. */
export function serverUrl(location) {
  return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/`;
}

export const BACKOFF_MS = Object.freeze([250, 500, 1000, 2000, 4000, 8000]);

/** A browser never sees the server's keepalive pings, so a connection whose path
 * died silently (a laptop's sleep, a NAT that forgot it) would look online until the
 * user's next send failed. After `idle` ms with nothing heard, the connection asks
 * the server something small; no reply within `timeout` ms means it is gone:
 * reconnect (and resume). */
export const HEARTBEAT_MS = Object.freeze({ idle: 25_000, timeout: 10_000 });

/** Events that are not in the server's log: their `cursor` is the last one already
 * told, not their own, so they are never repeats (`wire.UNLOGGED_EVENTS`). */
export const UNLOGGED_EVENTS = new Set(["presence"]);

/** A random id for a call that must run once (`client_id`). */
export function randomId() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * One signed-in device. Listeners (`on(name, fn)`):
 * - `event` (method, params): a server push, each cursor once, in order;
 * - `state` ("connecting" | "online" | "offline" | "signed-out");
 * - `login` (result): after every successful login, `result.resumed` false
 *   meaning the caller must refetch what it shows;
 * - `outbox` (items): the unsent messages changed.
 */
export class Connection {
  /**
   * @param {string} url  the WebSocket URL
   * @param {object} [options]
   * @param {object} [options.storage]  a Storage (localStorage) to keep the outbox in
   * @param {number[]} [options.backoff]  delays between reconnect attempts, ms
   * @param {Function} [options.WebSocket]  the WebSocket constructor
   * @param {{idle: number, timeout: number}} [options.heartbeat]  HEARTBEAT_MS
   */
  constructor(
    url,
    { storage = null, backoff = BACKOFF_MS, WebSocket = globalThis.WebSocket, heartbeat = HEARTBEAT_MS } = {},
  ) {
    this.url = url;
    this.storage = storage;
    this.backoff = backoff;
    this.WebSocket = WebSocket;
    this.heartbeat = heartbeat;
    this.heard = 0; // Date.now() when the socket last brought anything
    this.frames = 0; // how many frames the sockets brought: a probe's reply may be late
    this.beat = null; // the heartbeat's interval while online
    this.probing = false;
    this.socket = null;
    this.state = "offline";
    this.session = null; // {user, token, device}: set once signed in
    this.cursor = 0; // the largest cursor seen
    this.seenOnSocket = 0; // the largest cursor pushed on the current socket
    this.limits = null;
    this.outbox = [];
    this.listeners = new Map();
    this.pending = new Map(); // request id -> {resolve, reject}
    this.nextId = 1;
    this.attempt = 0;
    this.timer = null;
    this.draining = false;
  }

  on(name, listener) {
    if (!this.listeners.has(name)) this.listeners.set(name, new Set());
    this.listeners.get(name).add(listener);
    return () => this.listeners.get(name).delete(listener);
  }

  emit(name, ...args) {
    for (const listener of this.listeners.get(name) ?? []) {
      try {
        listener(...args);
      } catch (error) {
        console.error(`a ${name} listener failed`, error);
      }
    }
  }

  setState(state) {
    if (this.state !== state) {
      this.state = state;
      if (state === "online") this.startHeartbeat();
      else this.stopHeartbeat();
      this.emit("state", state);
    }
  }

  // -- the heartbeat ----------------------------------------------------------------

  startHeartbeat() {
    this.stopHeartbeat();
    this.heard = Date.now();
    const every = Math.max(10, Math.min(this.heartbeat.idle, this.heartbeat.timeout) / 2);
    this.beat = setInterval(() => this.checkAlive(), every);
  }

  stopHeartbeat() {
    clearInterval(this.beat);
    this.beat = null;
  }

  async checkAlive() {
    if (this.probing || this.state !== "online" || Date.now() - this.heard < this.heartbeat.idle) return;
    const socket = this.socket;
    const frames = this.frames;
    this.probing = true;
    let timer;
    const silent = new Promise((resolve) => {
      timer = setTimeout(() => resolve(true), this.heartbeat.timeout);
    });
    try {
      // `unread`: small, read-only, answered by whichever node the socket is on.
      const answered = this.call("unread").then(
        () => false,
        () => false,
      );
      // A reply can be late behind a slow call on this socket: frames that came
      // meanwhile show it alive (a dead path brings none).
      const late = await Promise.race([answered, silent]);
      if (late && this.frames === frames && this.socket === socket && this.state === "online") {
        console.warn(`no reply from the server in ${this.heartbeat.timeout} ms: reconnecting`);
        this.closeSocket();
        this.lost();
      }
    } finally {
      clearTimeout(timer);
      this.probing = false;
    }
  }

  // -- the socket ------------------------------------------------------------------

  /** Open a socket (no login yet); resolves once it is open. */
  open() {
    this.closeSocket();
    this.setState("connecting");
    this.seenOnSocket = 0;
    return new Promise((resolve, reject) => {
      const socket = new this.WebSocket(this.url);
      this.socket = socket;
      let opened = false;
      socket.onopen = () => {
        opened = true;
        resolve();
      };
      socket.onmessage = (message) => this.receive(message.data);
      socket.onclose = () => {
        if (this.socket !== socket) return;
        this.socket = null;
        this.failPending();
        if (!opened) reject(new ConnectionLost("Cannot reach the server"));
        // A drop while signing in is the signing-in code's to handle.
        if (this.state === "online") this.lost();
      };
    });
  }

  closeSocket() {
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      socket.onclose = null;
      socket.onmessage = null;
      socket.close();
    }
    this.failPending();
  }

  failPending() {
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const { reject } of pending) reject(new ConnectionLost());
  }

  receive(data) {
    this.heard = Date.now();
    this.frames += 1;
    let payload;
    try {
      payload = JSON.parse(data);
    } catch {
      return;
    }
    for (const item of Array.isArray(payload) ? payload : [payload]) {
      if (item && typeof item.method === "string" && !("id" in item)) {
        this.notified(item.method, item.params ?? {});
      } else if (item && this.pending.has(item.id)) {
        const { resolve, reject } = this.pending.get(item.id);
        this.pending.delete(item.id);
        if (item.error) reject(new RpcError(item.error));
        else resolve(item.result);
      }
    }
  }

  notified(method, params) {
    // Resume pushes what came after `since`; anything at or below the cursor
    // already seen is a repeat (a resume racing a live push): drop it.
    if (typeof params.cursor === "number" && !UNLOGGED_EVENTS.has(method)) {
      if (params.cursor <= this.cursor) return;
      this.cursor = params.cursor;
      this.seenOnSocket = params.cursor;
    }
    this.emit("event", method, params);
  }

  /** One JSON-RPC call on the open socket; rejects with RpcError or ConnectionLost. */
  call(method, params = {}) {
    const socket = this.socket;
    if (!socket || socket.readyState !== 1) return Promise.reject(new ConnectionLost());
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      socket.send(JSON.stringify({ jsonrpc: "2.0", method, params, id }));
    });
  }

  // -- signing in and staying in -----------------------------------------------------

  /**
   * Sign in with `{user, password}` (a new device; `register: true` creates the
   * account first) or `{user, token}` (this device again). Rejects with RpcError on
   * a refusal (and stays signed out), ConnectionLost when the server is unreachable.
   */
  async signIn({ user, password, token, register = false, deviceName }) {
    this.stop();
    this.cursor = 0; // a login without `since` resumes nothing
    this.forgetOutbox(); // another device's, maybe: this one's is reloaded from storage
    try {
      await this.open();
      if (register) await this.call("register", { user, password });
      const params = token ? { user, token } : { user, password };
      if (!token && deviceName) params.device_name = deviceName;
      const result = await this.call("login", params);
      this.loggedIn(result);
      return result;
    } catch (error) {
      this.closeSocket();
      this.setState("offline");
      throw error;
    }
  }

  loggedIn(result) {
    this.session = { user: result.user, token: result.token, device: result.device };
    this.limits = result.limits;
    // Not resumed: the server no longer holds what came after our cursor, or never
    // had it (its state was replaced); its cursor is the one to follow from now on.
    this.cursor =
      result.resumed === false ? Math.max(result.cursor, this.seenOnSocket) : Math.max(this.cursor, result.cursor);
    this.attempt = 0;
    this.loadOutbox();
    this.setState("online");
    this.emit("login", result);
    this.drain();
  }

  lost() {
    this.setState("offline");
    if (this.session) this.scheduleReconnect();
  }

  scheduleReconnect() {
    clearTimeout(this.timer);
    const delay = this.backoff[Math.min(this.attempt, this.backoff.length - 1)];
    this.attempt += 1;
    this.timer = setTimeout(() => this.reconnect(), delay);
  }

  /** Try at once (e.g. the browser says it is online again). */
  reconnectNow() {
    if (this.session && this.state === "offline") {
      this.attempt = 0;
      clearTimeout(this.timer);
      this.reconnect();
    }
  }

  async reconnect() {
    if (!this.session || this.state === "connecting" || this.state === "online") return;
    const { user, token } = this.session;
    try {
      await this.open();
      // Without a cursor yet (the server was away when the page loaded) there is
      // nothing to resume: a plain login, and the caller fetches everything.
      const params = this.cursor > 0 ? { user, token, since: this.cursor } : { user, token };
      const result = await this.call("login", params);
      this.loggedIn(result);
    } catch (error) {
      if (error instanceof RpcError && error.code === ErrorCode.UNAUTHENTICATED) {
        this.endSession(); // the token was revoked (signed out elsewhere)
        return;
      }
      if (this.socket) this.closeSocket();
      if (this.session) {
        this.setState("offline");
        this.scheduleReconnect();
      }
    }
  }

  /** Revoke this device's token and forget the session. */
  async signOut() {
    try {
      await this.call("logout");
    } finally {
      this.endSession();
    }
  }

  endSession() {
    this.clearOutbox();
    this.stop();
    this.session = null;
    this.cursor = 0;
    this.setState("signed-out");
  }

  stop() {
    clearTimeout(this.timer);
    this.timer = null;
    this.closeSocket();
    this.setState("offline");
  }

  // -- the outbox: sends that must be posted once ----------------------------------

  outboxKey() {
    return this.session ? `messenger.outbox.${this.session.user.toLowerCase()}.${this.session.device}` : null;
  }

  loadOutbox() {
    const key = this.outboxKey();
    if (!this.storage || !key || this.outbox.length) return;
    try {
      const stored = JSON.parse(this.storage.getItem(key) ?? "[]");
      this.outbox = stored.map((item) => ({ ...item, waiters: [] }));
    } catch {
      this.outbox = [];
    }
    if (this.outbox.length) this.emit("outbox", this.outbox);
  }

  saveOutbox() {
    const key = this.outboxKey();
    if (this.storage && key) {
      const items = this.outbox.map(({ client_id, params, queued_at }) => ({ client_id, params, queued_at }));
      if (items.length) this.storage.setItem(key, JSON.stringify(items));
      else this.storage.removeItem(key);
    }
    this.emit("outbox", this.outbox);
  }

  /** Drop the unsent messages, from storage too. */
  clearOutbox() {
    this.forgetOutbox();
    this.saveOutbox();
  }

  /** Drop the unsent messages from memory (storage keeps them for their device). */
  forgetOutbox() {
    const dropped = this.outbox;
    this.outbox = [];
    for (const item of dropped) for (const { reject } of item.waiters) reject(new ConnectionLost("Signed out"));
  }

  /**
   * Queue `send` params; resolves with its result once posted (after any number of
   * reconnects), rejects with the RpcError that refused it. The item is kept (in
   * `storage` too) until then, and carries a `client_id` so it is posted once.
   */
  send(params) {
    return new Promise((resolve, reject) => {
      const item = { client_id: randomId(), params, queued_at: Date.now(), waiters: [{ resolve, reject }] };
      this.outbox.push(item);
      this.saveOutbox();
      this.drain();
    });
  }

  async drain() {
    if (this.draining) return;
    this.draining = true;
    try {
      while (this.outbox.length && this.state === "online") {
        const item = this.outbox[0];
        let result;
        try {
          result = await this.call("send", { ...item.params, client_id: item.client_id });
        } catch (error) {
          if (error instanceof ConnectionLost) break; // sent again after the next login
          if (error instanceof RpcError && error.code === ErrorCode.UNAVAILABLE) {
            await new Promise((wake) => setTimeout(wake, 1000 * (error.data?.retry_after ?? 1)));
            continue;
          }
          this.settle(item, (waiter) => waiter.reject(error), error);
          continue;
        }
        this.settle(item, (waiter) => waiter.resolve(result), null);
      }
    } finally {
      this.draining = false;
    }
  }

  settle(item, tell, error) {
    this.outbox = this.outbox.filter((other) => other !== item);
    this.saveOutbox();
    if (item.waiters.length === 0 && error) this.emit("unsent", item, error); // queued before a reload
    item.waiters.forEach(tell);
  }
}

// -- files ---------------------------------------------------------------------------

function base64(bytes) {
  let binary = "";
  for (let start = 0; start < bytes.length; start += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(start, start + 0x8000));
  }
  return btoa(binary);
}

/**
 * Upload a Blob in the chunks the server asks for; resolves with the stored `file`.
 * `onProgress(sent, total)` after each chunk. A lost connection fails the upload.
 */
export async function upload(connection, blob, name, onProgress = () => {}) {
  const begun = await connection.call("upload.begin", {
    name,
    size: blob.size,
    content_type: blob.type || "application/octet-stream",
  });
  onProgress(0, blob.size);
  try {
    for (let start = 0; start < blob.size; start += begun.chunk_size) {
      const piece = new Uint8Array(await blob.slice(start, start + begun.chunk_size).arrayBuffer());
      const { received } = await connection.call("upload.chunk", { upload: begun.upload, data: base64(piece) });
      onProgress(received, blob.size);
    }
    return (await connection.call("upload.finish", { upload: begun.upload })).file;
  } catch (error) {
    connection.call("upload.abort", { upload: begun.upload }).catch(() => {});
    throw error;
  }
}
