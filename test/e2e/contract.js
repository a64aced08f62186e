// DESIGN.md's server->client table, restated here so the end-to-end tests
// check the Go routing table against the contract rather than against itself.
const now = () => new Date().toISOString();
export const fullEvent = () => ({
  account_id: "acme", conversation_id: "c1", channel_id: "web", contact_identifier: "+15550100", status: "open",
  created_at: now(), message_id: "m1", sender_type: "contact", message_body: "hello", is_private: false,
  assignee_id: "u-assignee", assigned_by: "u-lead", rule_name: "round-robin", labels: ["vip"], priority: "high",
  user_id: "u-other", unassigned_count: 4, oldest_waiting_seconds: 31, secret_field: "must never be copied",
});

export const contract = [
  { key: "conversation.created", emits: [["conversation:new", "account", ["channel_id", "contact_identifier", "conversation_id", "created_at", "status"]]] },
  { key: "conversation.message.created", emits: [["conversation:message", "conv", ["conversation_id", "created_at", "is_private", "message_body", "message_id", "sender_type"]], ["conversation:updated", "account", ["conversation_id", "last_message_at"]]] },
  { key: "conversation.message.sent", emits: [["conversation:message", "conv", ["conversation_id", "created_at", "is_private", "message_body", "message_id", "sender_type"]], ["conversation:updated", "account", ["conversation_id", "last_message_at"]]] },
  { key: "conversation.assigned", emits: [["notification:assignment", "user", ["assigned_by", "conversation_id", "rule_name"]], ["conversation:updated", "account+conv", ["assignee_id", "conversation_id", "status"]]] },
  { key: "conversation.status_changed", emits: [["conversation:updated", "account+conv", ["assignee_id", "conversation_id", "labels", "priority", "status"]]] },
  { key: "conversation.resolved", emits: [["conversation:updated", "account+conv", ["assignee_id", "conversation_id", "labels", "priority", "status"]]] },
  { key: "conversation.routed", emits: [["conversation:updated", "account+conv", ["assignee_id", "conversation_id", "labels", "priority", "status"]]] },
  { key: "agent.presence.changed", emits: [["agent:presence", "account", ["status", "user_id"]]] },
  { key: "queue.updated", emits: [["queue:update", "account", ["oldest_waiting_seconds", "unassigned_count"]]] },
];

