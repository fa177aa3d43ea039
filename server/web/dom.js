// Building the page: every text goes in as a text node (never as HTML), so nothing
// a user or the server wrote can become markup or script.

/**
 * h("button", {class: "x", onclick: fn, disabled: true}, "text", child...)
 * `on*` props add listeners; `class`, `dataset` and `text`-free attributes set as such.
 */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (name === "value" || name === "checked") element[name] = value;
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace the children of `element`. */
export function fill(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

/**
 * Make `items` the children of `parent`, in order, touching only what changed: a
 * node already in place stays (so focus, selection and a screen reader's live
 * region are left alone), new ones go in, the rest go out.
 */
export function reconcile(parent, items) {
  items.forEach((item, index) => {
    const current = parent.children[index] ?? null;
    if (current !== item) parent.insertBefore(item, current);
  });
  while (parent.children.length > items.length) parent.lastElementChild.remove();
}
