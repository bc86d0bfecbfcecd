"""Route chat prompts between two real local LLMs with LangChain, offline.

Run: python examples/langchain_quickstart.py
"""

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from langchain_routoo import LocalChatModel, RoutooBudget, RoutooChatModel
from routoo_shared.local_llm import local_router

router = local_router()  # bundled predictor + both local models learned from their real MMLU answers
models = {name: LocalChatModel(model=name, max_tokens=32) for name in router.pool.names}
budget = RoutooBudget(total_usd=0.01)
chat = RoutooChatModel(models=models, router=router, budget=budget)

prompts = [
    "What is the capital of France?",
    "Explain in one sentence why the sky is blue.",
    "Write a haiku about routing.",
]
for prompt in prompts:
    for label, model in (("quality first", chat), ("cost first", chat.bind(quality_cost_tradeoff=1.0))):
        message = model.invoke(prompt)
        record = message.response_metadata["routoo"]
        print(f"[{label}] {prompt}\n  -> {record['answered_by']}: {record['reason']}\n  answer: {message.content.strip()[:100]!r}")

chain = ChatPromptTemplate.from_messages([("user", "Answer briefly: {question}")]) | chat | StrOutputParser()
print("\nchain:", chain.invoke({"question": "What is 2 + 2?"}).strip()[:100])
print("\nstream:", end=" ")
for chunk in chat.stream("Name three colours."):
    if "routoo" in chunk.response_metadata:
        print(f"(answered by {chunk.response_metadata['model_name']})", end=" ")
    print(chunk.content, end="", flush=True)
print(f"\n\nbudget: spent {budget.spent_usd * 1e6:.2f} micro-USD over {budget.calls} calls")
