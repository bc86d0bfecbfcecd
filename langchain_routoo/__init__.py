"""LangChain integration: ``RoutooChatModel`` routes every call to one model of a pool."""

from langchain_routoo.chat_model import RoutooChatModel
from langchain_routoo.local import LocalChatModel
from routoo_shared.routing.budget import BudgetExhaustedError, RoutooBudget

__all__ = ["RoutooChatModel", "LocalChatModel", "RoutooBudget", "BudgetExhaustedError"]
