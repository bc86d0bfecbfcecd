"""State shared by every process and host of a deployment: budgets, cooldowns and sticky conversations
in Redis (``redis_store``). The routing runtime keeps the same state in-process by default and imports
this package only when a store URL is given."""
