"""Sticky routing's memory: which model keeps answering a conversation.

A conversation is named, strongest first, by an explicit ``session_id`` (a routing setting), by
LangGraph's ``thread_id`` (in every run's config), else by its history: the model that answered its
last assistant turn (LangChain messages carry the routing record; for LlamaIndex messages, which keep
none, a digest of that turn is looked up in the store). The kept model is tried first and the others
stay as fallbacks; the model that answers becomes the kept one.

A ``ConversationStore`` maps keys to pool model names for a time to live. The default keeps one
process's conversations; any object with the same two methods can replace it, such as one backed by
Redis, so that every worker of an application (and a LangGraph run resumed in another process) keeps
a thread on one model. ``get`` runs as a call is routed (in a worker thread for async calls), ``set``
once the call's model is committed (in the caller's thread or event loop).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

REPLY = "reply:"  # the prefix of keys that name a conversation by its last assistant turn


@runtime_checkable
class ConversationStore(Protocol):
    """Where sticky routing keeps the model of each conversation."""

    def get(self, key: str) -> str | None:
        """The model kept for ``key``, or None (never seen, or expired)."""

    def set(self, key: str, model: str, ttl_s: float) -> None:
        """Keep ``model`` for ``key`` for ``ttl_s`` seconds from now (each later turn renews it)."""


class InMemoryConversationStore:
    """The default store: this process's conversations, each forgotten ``ttl_s`` seconds after its last
    turn, the least recently used dropped beyond ``max_conversations``. Thread-safe; pickles (for
    worker processes) into a copy with the same entries."""

    def __init__(self, max_conversations: int = 4096):
        if isinstance(max_conversations, bool) or not isinstance(max_conversations, int) or max_conversations < 1:
            raise ValueError(f"max_conversations must be a positive whole number, got {max_conversations!r}")
        self.max_conversations = max_conversations
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()  # key -> (model, expiry in time.monotonic() seconds)
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[1] <= time.monotonic():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def set(self, key: str, model: str, ttl_s: float) -> None:
        with self._lock:
            self._entries[key] = (model, time.monotonic() + ttl_s)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_conversations:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def __getstate__(self) -> dict:
        return {"max_conversations": self.max_conversations, "entries": list(self._entries.items())}

    def __setstate__(self, state: dict) -> None:
        self.max_conversations = state["max_conversations"]
        self._entries = OrderedDict(state["entries"])
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"InMemoryConversationStore({len(self)} conversations, max_conversations={self.max_conversations})"


@dataclass(frozen=True)
class Conversation:
    """What names a call's conversation: an explicit ``session_id``, LangGraph's ``thread_id``, the
    model the history records for its last assistant turn, and a digest of that turn (``reply_digest``)."""

    session_id: str | None = None
    thread_id: str | None = None
    last_answered_by: str | None = None
    last_reply: str | None = None

    @property
    def key(self) -> str | None:
        """The store key of a named conversation (None when only its history names it)."""
        if self.session_id is not None:
            return f"session:{self.session_id}"
        return None if self.thread_id is None else f"thread:{self.thread_id}"

    @property
    def named_by(self) -> str:
        """How the conversation is named, for the routing record."""
        if self.session_id is not None:
            return f"session_id {self.session_id!r}"
        return f"thread_id {self.thread_id!r}" if self.thread_id is not None else "the conversation it answered last"


def reply_digest(text: str, tool_call_ids: Sequence[str] = ()) -> str:
    """A digest of an assistant turn (its text and tool-call ids) that names its conversation."""
    return hashlib.sha256("\x1f".join([text.strip(), *tool_call_ids]).encode()).hexdigest()[:32]
