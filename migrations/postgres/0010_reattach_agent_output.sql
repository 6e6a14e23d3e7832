-- Reattaching to an agent after its replica was lost (issue 22). The agent's output is also kept
-- in files inside its sandbox; the replica that adopts the turn replays those files and must
-- store exactly the events not stored yet.

-- Which output of which turn's agent an event came from: the turn, the stream (`stdout` or
-- `stderr`) and the event's index among the events made from that stream (0, 1, 2, ...). Set
-- only for the events made from the agent's output; stored in the same statement as the event,
-- so the stored log says exactly how far each stream got.
ALTER TABLE task_events ADD COLUMN agent_turn BIGINT;
ALTER TABLE task_events ADD COLUMN agent_stream TEXT;
ALTER TABLE task_events ADD COLUMN agent_index BIGINT;

-- The instance label of the sandbox in `container_id` when it is not `runner_id`'s own: another
-- replica adopted the task (a running turn, or a kept-alive sandbox) after its replica was lost,
-- and a container's labels cannot change. NULL: labelled with `runner_id`.
ALTER TABLE tasks ADD COLUMN sandbox_instance TEXT;
