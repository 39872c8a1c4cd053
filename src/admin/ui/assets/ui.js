// autokill's web page: live regions over Server-Sent Events, countdowns, and the calls its
// buttons make to /api/v1 and /v1 (JSON, same origin; the session cookie goes along). No
// dependencies. The page reads without this script; it only makes it live and lets it act.
(() => {
  'use strict';

  const byId = (id) => document.getElementById(id);

  // ---- messages ------------------------------------------------------------------------------

  let toastTimer = 0;
  function toast(text, ok) {
    const t = byId('toast');
    if (!t) return;
    t.textContent = text;
    t.className = ok ? 'show ok' : 'show';
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.className = ''; }, ok ? 3000 : 8000);
  }

  // ---- times: "in 4m 12s", "3m ago" ---------------------------------------------------------

  function span(ms) {
    let s = Math.floor(ms / 1000);
    if (s < 60) return s + 's';
    const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    s %= 60;
    if (d) return d + 'd ' + h + 'h';
    if (h) return h + 'h ' + m + 'm';
    return m + 'm ' + s + 's';
  }

  function times() {
    const now = Date.now();
    for (const t of document.querySelectorAll('time[data-t]')) {
      const at = Number(t.dataset.t);
      let text;
      if (t.dataset.mode === 'due') {
        text = at > now ? 'in ' + span(at - now) : 'now';
      } else {
        text = now - at < 5000 ? 'just now' : span(now - at) + ' ago';
      }
      if (t.textContent !== text) t.textContent = text;
    }
  }

  // ---- live regions ---------------------------------------------------------------------------

  function apply(msg) {
    // Keyboard focus survives a region being replaced: the element with the same id gets it.
    const focused = document.activeElement && document.activeElement.id;
    for (const r of msg.regions) {
      const el = byId(r.id);
      if (!el) continue;
      if (r.html !== undefined) {
        el.innerHTML = r.html;
      } else {
        for (const [key, html] of r.rows) {
          const row = byId(key);
          if (row) row.outerHTML = html;
        }
      }
    }
    if (focused) {
      const f = byId(focused);
      if (f && f !== document.activeElement) f.focus({ preventScroll: true });
    }
    times();
  }

  function live() {
    const url = document.body.dataset.events;
    const status = byId('live');
    if (!url || !status || !window.EventSource) return;
    const set = (state, text) => { status.dataset.state = state; status.textContent = text; };
    const es = new EventSource(url);
    es.onopen = () => set('on', 'live');
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) set('off', 'offline');
      else set('retry', 'reconnecting…');
    };
    es.addEventListener('patch', (e) => apply(JSON.parse(e.data)));
    es.addEventListener('gone', () => {
      es.close();
      set('off', 'gone');
      toast('This service is gone: it was terminated more than 15 minutes ago.');
    });
  }

  // ---- calls ----------------------------------------------------------------------------------

  function reason(data) {
    if (!data) return '';
    if (data.error) return data.error;
    if (data.errors && data.errors[0] && data.errors[0].message) return data.errors[0].message;
    return data.message || '';
  }

  async function call(method, url, body) {
    const init = { method, headers: { Accept: 'application/json' }, credentials: 'same-origin' };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(url, init);
    let data = null;
    try { data = await resp.json(); } catch (_) { /* no body */ }
    if (resp.status === 401) {
      throw new Error('Not allowed (401): ' + (reason(data) || 'sign in again'));
    }
    if (!resp.ok) throw new Error(reason(data) || resp.status + ' ' + resp.statusText);
    // /v1 batches answer 200 with the outcome per item.
    if (data && data.status === 'error') throw new Error(reason(data) || 'refused');
    return data;
  }

  // One call at a time per control; aria-busy rather than disabled, so focus stays put.
  async function busy(el, work) {
    if (el.getAttribute('aria-busy') === 'true') return;
    el.setAttribute('aria-busy', 'true');
    try {
      await work();
    } catch (err) {
      toast(err.message);
    } finally {
      el.removeAttribute('aria-busy');
    }
  }

  // The control as the page has it now: a live update may have replaced the one clicked.
  const current = (b) => (b.id && byId(b.id)) || b;

  function showAutodestroy(clicked, value) {
    const b = current(clicked);
    b.setAttribute('aria-pressed', String(value !== 'OFF'));
    b.dataset.value = value;
    const v = b.querySelector('.val');
    if (v) v.textContent = value;
  }

  function showLock(clicked, locked) {
    const b = current(clicked);
    b.setAttribute('aria-checked', String(locked));
    const l = b.querySelector('.label');
    if (l) l.textContent = locked ? 'locked' : 'unlocked';
  }

  document.addEventListener('click', (e) => {
    const b = e.target.closest('button');
    if (!b) return;
    if (b.dataset.call) {
      if (b.dataset.confirm && !window.confirm(b.dataset.confirm)) return;
      busy(b, async () => {
        await call(b.dataset.method || 'POST', b.dataset.call);
        toast(b.textContent.trim() + ': sent', true);
      });
    } else if (b.dataset.autodestroy) {
      // Tutum's button: ALWAYS when off, OFF when on (any value but OFF counts as on).
      const want = b.dataset.value === 'OFF' ? 'ALWAYS' : 'OFF';
      busy(b, async () => {
        const s = await call('PATCH', b.dataset.autodestroy, { autodestroy: want });
        showAutodestroy(b, s.autodestroy);
      });
    } else if (b.dataset.lock) {
      const want = b.getAttribute('aria-checked') !== 'true';
      busy(b, async () => {
        const d = await call('PATCH', b.dataset.lock, { prop: 'delete_lock', op: 'set', value: want });
        const items = (d && d.data && (d.data.instances || d.data.service_groups)) || [];
        showLock(b, items[0] && items[0].delete_lock !== undefined ? items[0].delete_lock : want);
      });
    }
  });

  async function launch(form) {
    const status = byId('launch-status');
    const f = form.elements;
    const body = {
      image: f.image.value.trim(),
      target_num_containers: Number(f.containers.value),
      autorestart: f.autorestart.value,
      autodestroy: f.autodestroy.checked ? 'ALWAYS' : 'OFF',
    };
    const name = f.name.value.trim();
    if (name) body.name = name;
    const n = f.num_requests.value, t = f.stopped_s.value;
    if (n || t) body.autokill = { num_requests: Number(n || 0), time_ms: Math.round(Number(t || 0) * 1000) };
    status.textContent = 'Creating…';
    status.className = '';
    let service;
    try {
      service = await call('POST', '/api/v1/service/', body);
      if (body.target_num_containers > 0) {
        status.textContent = 'Starting ' + service.name + '…';
        await call('POST', service.resource_uri + 'start/');
      }
    } catch (err) {
      status.className = 'error';
      status.textContent = (service ? service.name + ' was created but not started: ' : '') + err.message;
      return;
    }
    location.href = '/ui/services/' + service.uuid;
  }

  async function scale(form) {
    const n = Number(form.elements.n.value);
    const url = form.dataset.scale;
    await call('PATCH', url, { target_num_containers: n });
    await call('POST', url + 'scale/');
    toast('Scaling to ' + n, true);
  }

  document.addEventListener('submit', (e) => {
    const form = e.target;
    if (form.id === 'launch') {
      e.preventDefault();
      busy(form, () => launch(form));
    } else if (form.dataset.scale) {
      e.preventDefault();
      busy(form, () => scale(form));
    }
  });

  function start() {
    const fields = byId('launch-fields');
    if (fields) fields.disabled = false;
    times();
    setInterval(times, 1000);
    live();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
