// @ts-check
/**
 * The chat panel: the room's messages as the server stamped them (sender name and time, never
 * what a client claims), a form to send one, and the unread count on the chat button while the
 * panel is closed. All transport is the SDK's (`Session.sendChat`, the `chat` and
 * `chat-history` events); this file only renders.
 *
 * DOM: `#btn-chat` (aria-expanded; its `#chat-unread` badge), `#chat-panel`, `#chat-log` (one
 * `li.chat-msg` per message: `data-id`, `data-from`, `.chat-name`, `.chat-time`, `.chat-text`;
 * our own get `.self`), `#chat-form`, `#chat-input`, `#chat-error` (why the last send was
 * refused, e.g. "Slow down: too many messages").
 */

/** @typedef {import('./confab.js').ChatMessage} ChatMessage */

/** Text for each `ChatError.reason`. */
const REFUSED = /** @type {Record<string, string>} */ ({
  rate_limited: 'Slow down: too many messages',
  too_long: 'Message too long (2000 characters at most)',
  empty: 'Type a message first',
  not_allowed: 'You may not send messages in this room',
  malformed: 'The message could not be sent',
  spoofed: 'The message could not be sent',
  not_connected: 'Chat is not connected yet',
  timeout: 'The server did not confirm the message',
});

/** @param {string} id */
function byId(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`#${id} missing from index.html`);
  return node;
}

export class ChatPanel {
  /** @type {import('./confab.js').Session | null} */
  #session = null;
  /** Message ids shown, so history and live messages never show twice. */
  #shown = new Set();
  #unread = 0;
  /** What the panel shows, oldest first (for tests: `state.chat`). @type {{id: number, from: string, name: string, text: string, self: boolean}[]} */
  messages = [];

  constructor() {
    this.button = /** @type {HTMLButtonElement} */ (byId('btn-chat'));
    this.badge = byId('chat-unread');
    this.panel = byId('chat-panel');
    this.log = byId('chat-log');
    this.form = /** @type {HTMLFormElement} */ (byId('chat-form'));
    this.input = /** @type {HTMLInputElement} */ (byId('chat-input'));
    this.error = byId('chat-error');
    this.button.addEventListener('click', () => this.toggle());
    byId('chat-close').addEventListener('click', () => {
      this.toggle(false);
      this.button.focus();
    });
    this.form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.#send();
    });
  }

  /** Follows a new session (null: the call ended). @param {import('./confab.js').Session | null} session */
  attach(session) {
    this.#session = session;
    this.#shown.clear();
    this.messages = [];
    this.log.replaceChildren();
    this.#setUnread(0);
    this.#showError(null);
    if (!session) return;
    session.addEventListener('chat', (ev) => {
      if (this.#session === session) this.#add(/** @type {CustomEvent<ChatMessage>} */ (ev).detail, true);
    });
    session.addEventListener('chat-history', (ev) => {
      if (this.#session !== session) return;
      for (const m of /** @type {CustomEvent<{messages: ChatMessage[]}>} */ (ev).detail.messages) this.#add(m, false);
    });
  }

  /** The count on the chat button. */
  get unread() {
    return this.#unread;
  }

  get open() {
    return !this.panel.hidden;
  }

  /** Opens or closes the panel (toggles without an argument). @param {boolean} [open] */
  toggle(open = !this.open) {
    this.panel.hidden = !open;
    this.button.setAttribute('aria-expanded', String(open));
    document.body.classList.toggle('chat-open', open);
    if (open) {
      this.#setUnread(0);
      this.input.focus();
      this.log.scrollTop = this.log.scrollHeight;
    }
  }

  async #send() {
    const session = this.#session;
    const text = this.input.value;
    if (!session || !text.trim()) return;
    this.#showError(null);
    try {
      const sent = await session.sendChat(text);
      if (this.input.value === text) this.input.value = '';
      this.#add(sent, false);
    } catch (e) {
      const reason = /** @type {any} */ (e)?.reason;
      const retry = /** @type {any} */ (e)?.retryAfterMs;
      const wait = reason === 'rate_limited' && typeof retry === 'number' ? ` — try again in ${Math.max(1, Math.ceil(retry / 1000))} s` : '';
      this.#showError(`${REFUSED[reason] ?? `The message could not be sent (${reason ?? e})`}${wait}`);
      this.lastError = reason ?? String(e);
    }
  }

  /** The reason of the last refused send (for tests: `state.chatError`), null after a good one. @type {string | null} */
  lastError = null;

  /** @param {string | null} text */
  #showError(text) {
    if (!text) this.lastError = null;
    this.error.hidden = !text;
    this.error.textContent = text ?? '';
  }

  /** @param {number} n */
  #setUnread(n) {
    this.#unread = n;
    this.badge.hidden = n === 0;
    this.badge.textContent = n > 99 ? '99+' : String(n);
    this.button.setAttribute('aria-label', n ? `Chat, ${n} unread` : 'Chat');
  }

  /**
   * Shows one message in id order (a late history page may hold older ones).
   * @param {ChatMessage} m
   * @param {boolean} live  a new message (counts as unread while the panel is closed)
   */
  #add(m, live) {
    if (!m || this.#shown.has(m.id)) return;
    this.#shown.add(m.id);
    const li = document.createElement('li');
    li.className = m.self ? 'chat-msg self' : 'chat-msg';
    li.dataset.id = String(m.id);
    li.dataset.from = m.from;
    const head = document.createElement('div');
    head.className = 'chat-head';
    const name = document.createElement('span');
    name.className = 'chat-name';
    name.textContent = m.self ? `${m.name} (you)` : m.name;
    const time = document.createElement('time');
    time.className = 'chat-time';
    const at = new Date(m.ts);
    time.dateTime = at.toISOString();
    time.textContent = at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    head.append(name, time);
    const text = document.createElement('div');
    text.className = 'chat-text';
    text.textContent = m.text; // never HTML
    li.append(head, text);
    const after = [...this.log.children].find((c) => Number(/** @type {HTMLElement} */ (c).dataset.id) > m.id);
    this.log.insertBefore(li, after ?? null);
    const entry = { id: m.id, from: m.from, name: m.name, text: m.text, self: m.self };
    this.messages.push(entry);
    this.messages.sort((a, b) => a.id - b.id);
    if (this.open) this.log.scrollTop = this.log.scrollHeight;
    else if (live && !m.self) this.#setUnread(this.#unread + 1);
  }
}
