"""Route chat prompts between two real local LLMs with LangChain, offline, and show why each was chosen.

Run: python examples/langchain_quickstart.py
"""

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI

from langchain_routoo import LocalChatModel, RoutooBudget, RoutooChatModel
from routoo_shared.local.llm import local_router

router = local_router()  # bundled predictor + both local models learned from their real MMLU answers
models = {name: LocalChatModel(model=name, max_tokens=24) for name in router.pool.names}
budget = RoutooBudget(total_usd=0.01)
chat = RoutooChatModel(models=models, router=router, budget=budget)


def show(label: str, message) -> None:
    record = message.response_metadata["routoo"]
    failed = [a for a in record["attempts"] if a["error"]]
    print(f"[{label}] -> {record['answered_by']}")
    print(f"    why: {record['reason']}")
    for attempt in failed:
        print(f"    {attempt['model']} raised {attempt['error'][:80]}")
    print(f"    answer: {message.content.strip()[:90]!r}")


question = "What is the capital of France?"
show("default", chat.invoke(question))
show("deny smollm2", chat.invoke(question, denied_models=["smollm2-135m-instruct"]))
show("forced model", chat.invoke(question, model="gemma-3-270m"))
show("quality floor 0.99, relaxed", chat.invoke(question, min_quality=0.99, on_infeasible="relax"))

# a provider that is down (nothing listens on this local port): the next-best model answers
down = ChatOpenAI(model="gpt-4o-mini", api_key="sk-none", base_url="http://127.0.0.1:9/v1", max_retries=0)
flaky = RoutooChatModel(models={**models, "smollm2-135m-instruct": down}, router=router)
show("fallback", flaky.invoke(question))

chain = ChatPromptTemplate.from_messages([("user", "Answer briefly: {question}")]) | chat | StrOutputParser()
print("\nchain:", chain.invoke({"question": "What is 2 + 2?"}).strip()[:90])
print("stream:", end=" ")
for chunk in chat.stream("Name three colours."):
    if "model_name" in chunk.response_metadata:  # the first chunk names the model and carries the decision
        print(f"(answered by {chunk.response_metadata['model_name']})", end=" ")
    print(chunk.content, end="", flush=True)
print(f"\n\nbudget: spent {budget.spent_usd * 1e6:.2f} micro-USD of {budget.total_usd} USD over {budget.calls} calls")
