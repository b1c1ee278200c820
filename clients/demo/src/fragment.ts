/**
 * Settings from the URL fragment (`#room=board1&token=…&name=ada`): a fragment never
 * reaches the server, so a token in it is not in any request line or access log.
 */
export interface Fragment {
  room: string;
  token: string | undefined;
  name: string | undefined;
}

const ROOM_RE = /^[A-Za-z0-9._-]{1,128}$/;

export function readFragment(hash: string = window.location.hash): Fragment {
  const params = new URLSearchParams(hash.replace(/^#/, ""));
  const room = params.get("room") ?? "board1";
  return {
    room: ROOM_RE.test(room) ? room : "board1",
    token: params.get("token") || undefined,
    name: params.get("name") || undefined,
  };
}
