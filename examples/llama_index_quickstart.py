"""Route LlamaIndex calls between two real local LLMs, and use Routoo in a query engine, offline.

Run: python examples/llama_index_quickstart.py
"""

from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.llms import ChatMessage

from llama_index_routoo import LocalGGUFLLM, MiniLMEmbedding, RoutooLLM
from routoo_shared.local.llm import local_router

router = local_router()
llms = {name: LocalGGUFLLM(model=name, max_tokens=32) for name in router.pool.names}
llm = RoutooLLM(llms=llms, router=router, timeout_s=300)  # a first call loads its model (seconds)

completion = llm.complete("The three primary colours are")
record = completion.additional_kwargs["routoo"]
print(f"complete -> {record['answered_by']}: {record['reason']}")
print("  ", completion.text.strip()[:100])

chat = llm.chat([ChatMessage(role="user", content="What is the capital of Italy?")], denied_models=["smollm2-135m-instruct"])
print(f"chat (smollm2 denied) -> {chat.additional_kwargs['model_name']}: {chat.additional_kwargs['routoo']['reason']}")
print("  ", chat.message.content.strip()[:100])

Settings.llm, Settings.embed_model = llm, MiniLMEmbedding()
documents = [
    Document(text="Routoo predicts how well each model would answer a prompt, then picks one under a budget."),
    Document(text="The Eiffel Tower in Paris was completed in 1889."),
]
engine = VectorStoreIndex.from_documents(documents).as_query_engine(similarity_top_k=1)
response = engine.query("When was the Eiffel Tower completed?")
print("query engine:", str(response).strip()[:100])
print("  source:", response.source_nodes[0].node.get_content()[:80])
