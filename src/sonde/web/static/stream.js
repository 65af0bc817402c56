// The live tail: PATH/stream read with fetch, because EventSource cannot send the key in
// a header. The text/event-stream framing is parsed here; after a dropped connection the
// stream is opened again with Last-Event-ID, so no line is lost or shown twice
// (docs/logs.md#live-tail).

import {ApiError, apiUrl, errorOf, requireKey} from "./api.js";

const BACKOFF_MS = [500, 1000, 2000, 5000];

/** Opens the stream of a logs `path` with `params`; calls onLine(LogV1) per line and
 * onState("live" | "reconnecting" | "error", err) as it goes. Returns {stop()}. */
export function liveTail(path, params, {onLine, onState}) {
  let lastId = null;
  let stopped = false;
  let controller = null;
  let attempt = 0;

  function dispatch(ev) {
    if (!ev.data.length) return;
    const data = JSON.parse(ev.data.join("\n"));
    if (ev.event === "error") { // the server ended it (a revoked key): do not reconnect
      stopped = true;
      onState("error", new ApiError(401, data.message, "stream_ended", null));
      return;
    }
    if (ev.id !== null) lastId = ev.id;
    onLine(data);
  }

  async function read(response) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    let ev = {data: [], id: null, event: "message"};
    for (;;) {
      const {value, done} = await reader.read();
      if (done || stopped) return;
      buf += value;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, i).replace(/\r$/, "");
        buf = buf.slice(i + 1);
        if (line === "") {
          dispatch(ev);
          ev = {data: [], id: null, event: "message"};
        } else if (!line.startsWith(":")) { // ":" starts a heartbeat comment
          const colon = line.indexOf(":");
          const name = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (name === "data") ev.data.push(value);
          else if (name === "id") ev.id = value;
          else if (name === "event") ev.event = value;
        }
      }
    }
  }

  async function run() {
    while (!stopped) {
      controller = new AbortController();
      try {
        const headers = {Authorization: `Bearer ${requireKey()}`, Accept: "text/event-stream"};
        if (lastId) headers["Last-Event-ID"] = lastId;
        const response = await fetch(apiUrl(`${path}/stream`, params),
          {headers, cache: "no-store", signal: controller.signal});
        if (!response.ok) {
          onState("error", await errorOf(response));
          return;
        }
        attempt = 0;
        onState("live");
        await read(response);
      } catch (e) {
        if (stopped) return;
        if (e instanceof ApiError) {
          onState("error", e);
          return;
        }
      }
      if (stopped) return;
      onState("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, BACKOFF_MS[Math.min(attempt++, BACKOFF_MS.length - 1)]));
    }
  }

  run();
  return {
    stop() {
      stopped = true;
      if (controller) controller.abort();
    },
  };
}
