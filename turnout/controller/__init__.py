"""The rollout controller: a pure state machine (``machine``) driven by one task
(``driver``), with durable state and audit in the store."""
