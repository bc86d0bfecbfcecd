"""LlamaIndex integration: ``RoutooLLM`` routes every call to one LLM of a pool.

Names load on first use, so ``import llama_index_routoo`` costs little; ``from llama_index_routoo
import RoutooLLM`` loads LlamaIndex's LLM base.
"""

from typing import TYPE_CHECKING

from routoo_shared.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from llama_index_routoo.llm import RoutooLLM
    from llama_index_routoo.local import LocalGGUFLLM, MiniLMEmbedding
    from routoo_shared.routing.budget import BudgetExhaustedError, RoutooBudget

_EXPORTS = {
    "RoutooLLM": "llama_index_routoo.llm",
    "LocalGGUFLLM": "llama_index_routoo.local",
    "MiniLMEmbedding": "llama_index_routoo.local",
    "RoutooBudget": "routoo_shared.routing.budget",
    "BudgetExhaustedError": "routoo_shared.routing.budget",
}
__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
