// A sample agent client, type-checked against the generated contract by
// `tsc --noEmit` (test/e2e/types.test.js). It is what a frontend would write;
// the @ts-expect-error lines prove the declarations reject what the server would.
import { io, type Socket } from "socket.io-client";
import type {
  Ack,
  AckOf,
  AgentStatus,
  ClientToServerEvents,
  ConnectErrorData,
  ConversationUpdated,
  Presence,
  ServerToClientEvents,
} from "../../../clients/typescript/realtime-events";

type AgentSocket = Socket<ServerToClientEvents, ClientToServerEvents>;

declare function fetchToken(): Promise<string>;

export function connect(url: string): AgentSocket {
  // auth as a callback: each (re)connection asks for a fresh token.
  const socket: AgentSocket = io(`${url}/agents`, {
    auth: (cb) => { fetchToken().then((token) => cb({ token })); },
  });

  socket.on("connect_error", (err) => {
    const data = (err as Error & { data?: ConnectErrorData }).data;
    if (data?.code === "token_expired") console.log("log in again");
  });

  const inbox = new Map<string, ConversationUpdated>();
  socket.on("conversation:new", (c) => {
    inbox.set(c.conversation_id, { conversation_id: c.conversation_id, ...(c.status ? { status: c.status } : {}) });
  });
  socket.on("conversation:updated", (u) => {
    inbox.set(u.conversation_id, { ...inbox.get(u.conversation_id), ...u });
    const labels: string[] = u.labels ?? [];
    console.log(labels.join(","));
  });
  socket.on("conversation:message", (m) => {
    const privateNote: boolean = m.is_private === true;
    console.log(m.conversation_id, m.message_body ?? "", privateNote);
  });
  socket.on("notification:assignment", (n) => console.log(`assigned ${n.conversation_id} by ${n.assigned_by ?? "?"}`));
  socket.on("conversation:typing", (t) => console.log(t.user_id, t.typing ? "typing" : "stopped"));
  socket.on("agent:presence", (p) => {
    const status: AgentStatus | undefined = p.status;
    console.log(p.user_id, status);
  });
  socket.on("queue:update", (q) => console.log(q.unassigned_count ?? 0));
  socket.on("auth:expired", (e) => console.log(e.code, e.message));

  // @ts-expect-error: not an event of the contract
  socket.on("conversation:deleted", () => {});
  // @ts-expect-error: conversation:typing's payload has no body
  socket.on("conversation:typing", (t) => console.log(t.body));
  return socket;
}

export async function start(socket: AgentSocket, account: string): Promise<Presence[]> {
  // Callback style.
  socket.emit("account:subscribe", { account_id: account }, (res) => {
    if (res.ok) console.log("subscribed to", res.account_id);
    else console.log(res.error, res.message);
  });

  // Promise style, with a timeout. socket.io-client types timeout().emitWithAck
  // as any, so annotate the result with AckOf.
  const join: AckOf<"conversation:join"> = await socket.timeout(5000).emitWithAck("conversation:join", { conversation_id: "c-1", account_id: account });
  if (join.ok) console.log(join.conversation_id);
  // Without timeout() the result is inferred.
  const typing = await socket.emitWithAck("conversation:typing:start", { conversation_id: "c-1" });
  if (!typing.ok && typing.error === "rate_limited") console.log("slow down");

  // With timeout() the callback also gets the timeout error first.
  socket.timeout(5000).emit("agent:status", { status: "away" }, (err, res) => {
    if (err) return;
    if (res.ok) {
      const s: AgentStatus = res.status;
      console.log(s);
    }
  });

  const list: Ack<{ account_id: string; presence: Presence[] }> = await socket.emitWithAck("agent:presence:list", { account_id: account });
  if (!list.ok) {
    if (list.error === "forbidden") console.log("not my account");
    return [];
  }
  const refresh = await socket.emitWithAck("auth:refresh", { token: await fetchToken() });
  if (refresh.ok && refresh.expires_at) console.log(new Date(refresh.expires_at));

  // @ts-expect-error: not an event of the contract
  socket.emit("account:delete", { account_id: account }, () => {});
  // @ts-expect-error: account_id must be a string
  socket.emit("account:subscribe", { account_id: 42 }, () => {});
  // @ts-expect-error: conversation_id is required
  socket.emit("conversation:join", { account_id: account }, () => {});
  // @ts-expect-error: "busy" is not an AgentStatus
  socket.emit("agent:status", { status: "busy" }, () => {});
  // @ts-expect-error: the ack may be an error; narrow on ok first
  console.log(join.conversation_id);
  // @ts-expect-error: an error code outside the contract
  if (!join.ok && join.error === "nope") console.log("unreachable");

  return list.presence ?? [];
}
