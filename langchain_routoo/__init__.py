"""LangChain integration: ``RoutooChatModel`` routes every call to one model of a pool.

Names load on first use, as ``langchain_core.language_models`` does, so ``import langchain_routoo``
costs little; ``from langchain_routoo import RoutooChatModel`` loads LangChain's chat-model base.
"""

from typing import TYPE_CHECKING

from routoo_shared.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from langchain_routoo.chat_model import RoutooChatModel
    from langchain_routoo.local import LocalChatModel
    from routoo_shared.routing.budget import BudgetExhaustedError, RoutooBudget

_EXPORTS = {
    "RoutooChatModel": "langchain_routoo.chat_model",
    "LocalChatModel": "langchain_routoo.local",
    "RoutooBudget": "routoo_shared.routing.budget",
    "BudgetExhaustedError": "routoo_shared.routing.budget",
}
__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
