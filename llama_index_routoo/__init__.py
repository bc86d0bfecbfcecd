"""LlamaIndex integration: ``RoutooLLM`` routes every call to one LLM of a pool."""

from llama_index_routoo.llm import RoutooLLM
from llama_index_routoo.local import LocalGGUFLLM, MiniLMEmbedding
from routoo_shared.routing.budget import BudgetExhaustedError, RoutooBudget

__all__ = ["RoutooLLM", "LocalGGUFLLM", "MiniLMEmbedding", "RoutooBudget", "BudgetExhaustedError"]
