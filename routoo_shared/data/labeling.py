"""Label a pool on your prompts: run every model, grade every answer, write the routing dataset.

Models are LangChain chat models, LlamaIndex LLMs, or ``models.json`` entries called by name
(``chat_model_for``: ``init_chat_model`` for provider models, the bundled GGUF models for
``provider: "local"``). Calls run with bounded concurrency and retries; every answer and every
judge verdict is appended to a JSONL cache as it arrives, so an interrupted run resumes where it
stopped and a finished one costs nothing to repeat. The cost is summed from the pool's prices and
the usage each model reports (counted with tiktoken where a model reports none).

Graders turn an answer into a score in [0, 1]:

- ``Match``: exact match with the reference answer, or the first regex group found in the answer;
- ``FunctionGrader``: your function ``(question, answer) -> float | bool``;
- ``LLMJudge``: a judge model rates the answer against the reference answer (or, when a prompt
  has none, against the reference model's answer) on a fixed 1-5 rubric, normalised to [0, 1]
  (the reference model's own answer scores 1 against itself);
- ``PairwisePreference``: a judge compares the answer with the reference model's answer in both
  orders (position bias cancels) and scores win 1, tie 0.5, loss 0, RouteLLM's preference labels
  (Ong et al., 2024, "RouteLLM: Learning to Route LLMs with Preference Data"); the judge-order
  swap follows Zheng et al., 2023, "Judging LLM-as-a-judge with MT-Bench and Chatbot Arena".
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from routoo_shared.data.formats import ModelResult, Question
from routoo_shared.routing.messages import content_text
from routoo_shared.routing.pool import ModelPool, ModelSpec
from routoo_shared.routing.tokens import count_tokens

# genai-prices provider ids where LangChain's init_chat_model names the provider differently
LANGCHAIN_PROVIDERS = {"google": "google_genai", "mistral": "mistralai", "x-ai": "xai", "aws": "bedrock_converse"}

JUDGE_RUBRIC = """You are grading an answer to a question against a reference answer.

Question:
{question}

Reference answer:
{reference}

Answer to grade:
{answer}

Rate the answer from 1 to 5:
5 = correct and as complete as the reference
4 = correct, with minor omissions
3 = partly correct
2 = mostly wrong
1 = wrong, off-topic or empty
Reply with the number only.
Score (1-5):"""

PAIRWISE_PROMPT = """Which answer to the question is better?

Question:
{question}

Answer A:
{first}

Answer B:
{second}

Reply with A, B or tie only."""


class LabelingError(ValueError):
    """Labelling cannot start: a model has no callable, or a grader lacks what it needs."""


class Answer(BaseModel):
    """One model call's result, as cached on disk."""

    text: str
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    latency_s: float = Field(ge=0)
    cost_usd: float = Field(ge=0)


class LabelReport(BaseModel):
    """What a labelling run produced and spent (USD)."""

    questions: list[Question]
    cost_usd: dict[str, float] = Field(description="USD of the calls made in this run, per model (judges too)")
    cached_calls: int = Field(description="calls answered from the cache (spent in an earlier run)")
    new_calls: int
    failures: list[str] = Field(description="'question id / model: error' for calls that failed every retry")
    ungraded: int = Field(description="answers the grader could not score (e.g. an unparsable judge reply)")

    @property
    def total_cost_usd(self) -> float:
        return sum(self.cost_usd.values())


# ----- calling models


def chat_model_for(spec: ModelSpec) -> Any:
    """A LangChain chat model for a pool entry: the local GGUF models for provider ``local``,
    else ``init_chat_model(provider_model or name, model_provider=provider)`` (needs ``langchain``
    and the provider's package, e.g. ``langchain-openai``, plus its API key)."""
    if spec.provider == "local":  # generates at most the spec's max_output_tokens
        from langchain_routoo.local import LocalChatModel

        return LocalChatModel(model=spec.provider_model or spec.name, max_tokens=spec.max_output_tokens)
    if spec.provider is None:
        raise LabelingError(f"model {spec.name!r} has no provider: pass its chat model in 'models' instead")
    try:
        from langchain.chat_models import init_chat_model
    except ImportError as error:
        raise LabelingError("calling models by name needs 'pip install langchain' and the provider's package") from error
    provider = LANGCHAIN_PROVIDERS.get(spec.provider, spec.provider)
    try:
        return init_chat_model(spec.provider_model or spec.name, model_provider=provider)
    except Exception as error:  # a missing package or API key: name the model it was for
        raise LabelingError(f"cannot create a chat model for {spec.name!r} (provider {provider!r}): {error}") from error


async def _call(model: Any, messages: list[dict]) -> tuple[str, int | None, int | None]:
    """(text, input tokens, output tokens) from a LangChain chat model or a LlamaIndex LLM."""
    if hasattr(model, "ainvoke"):  # LangChain
        message = await model.ainvoke(messages)
        usage = getattr(message, "usage_metadata", None) or {}
        return content_text(message.content), usage.get("input_tokens"), usage.get("output_tokens")
    if hasattr(model, "achat"):  # LlamaIndex
        from llama_index.core.base.llms.types import ChatMessage

        response = await model.achat([ChatMessage(role=m["role"], content=m["content"]) for m in messages])
        extra = response.additional_kwargs or {}
        usage = (response.raw or {}).get("usage") if isinstance(response.raw, dict) else None
        usage = usage if isinstance(usage, dict) else {}
        return (
            response.message.content or "",
            extra.get("prompt_tokens", usage.get("prompt_tokens")),
            extra.get("completion_tokens", usage.get("completion_tokens")),
        )
    raise LabelingError(f"{type(model).__name__} is neither a LangChain chat model nor a LlamaIndex LLM")


class Calls:
    """Model calls with a disk cache, bounded concurrency, retries and cost accounting."""

    def __init__(self, cache: str | Path | None, max_concurrency: int = 4, max_retries: int = 2, retry_wait_s: float = 1.0):
        if max_concurrency < 1 or max_retries < 0 or retry_wait_s < 0:
            raise LabelingError("max_concurrency must be >= 1, max_retries and retry_wait_s >= 0")
        self.path = Path(cache) if cache else None
        self.answers: dict[str, Answer] = {}
        if self.path and self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    record = json.loads(line)
                    self.answers[record.pop("key")] = Answer(**record)
        self.max_concurrency, self.max_retries, self.retry_wait_s = max_concurrency, max_retries, retry_wait_s
        self.cost_usd: dict[str, float] = {}
        self.cached = self.new = 0
        self._slots: asyncio.Semaphore | None = None

    @staticmethod
    def key(name: str, messages: list[dict]) -> str:
        return hashlib.sha256(json.dumps([name, messages], sort_keys=True).encode()).hexdigest()

    async def ask(self, name: str, model: Any, spec: ModelSpec | None, messages: list[dict]) -> Answer:
        """The answer of ``model`` (called ``name``), from the cache or from up to ``1 + max_retries`` calls."""
        key = self.key(name, messages)
        if key in self.answers:
            self.cached += 1
            return self.answers[key]
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_concurrency)
        async with self._slots:
            for attempt in range(self.max_retries + 1):
                start = time.perf_counter()
                try:
                    text, input_tokens, output_tokens = await _call(model, messages)
                    break
                except (LabelingError, TypeError, AttributeError):
                    raise  # our mistake or the caller's, not a provider's: retrying cannot help
                except Exception:
                    if attempt == self.max_retries:
                        raise
                    await asyncio.sleep(self.retry_wait_s * 2**attempt)
            latency = time.perf_counter() - start
        if input_tokens is None:
            input_tokens = sum(count_tokens(content_text(m["content"])) for m in messages)
        if output_tokens is None:
            output_tokens = count_tokens(text)
        cost = spec.cost(input_tokens, output_tokens) if spec else 0.0
        answer = Answer(text=text, input_tokens=input_tokens, output_tokens=output_tokens, latency_s=latency, cost_usd=cost)
        self.answers[key] = answer
        self.new += 1
        self.cost_usd[name] = self.cost_usd.get(name, 0.0) + cost
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"key": key, **answer.model_dump()}) + "\n")
        return answer


# ----- graders


class Judge(BaseModel, arbitrary_types_allowed=True):
    """A model that grades: its callable, a name for the cache and report, and its prices (optional)."""

    model: Any
    name: str = "judge"
    spec: ModelSpec | None = None


class Match(BaseModel):
    """1 when the answer matches the reference answer, else 0. With ``pattern``, the first match's
    first group (or whole match) is compared, e.g. ``r"\\b([A-J])\\b"`` for a multiple-choice letter."""

    pattern: str | None = None
    ignore_case: bool = True

    def _normal(self, text: str) -> str:
        text = " ".join(text.split()).strip(" .")
        return text.lower() if self.ignore_case else text

    async def score(self, question: Question, answer: str, reference: str | None, calls: Calls) -> float | None:
        if question.answer is None:
            raise LabelingError(f"question {question.id!r} has no reference 'answer' to match against")
        if self.pattern:
            found = re.search(self.pattern, answer, flags=re.IGNORECASE if self.ignore_case else 0)
            if not found:
                return 0.0
            answer = found.group(1) if found.groups() else found.group(0)
        return float(self._normal(answer) == self._normal(question.answer))


class FunctionGrader(BaseModel, arbitrary_types_allowed=True):
    """Your grading function: ``function(question, answer) -> float | bool`` in [0, 1]."""

    function: Callable[[Question, str], float | bool]
    async def score(self, question: Question, answer: str, reference: str | None, calls: Calls) -> float | None:
        value = float(self.function(question, answer))
        if not 0.0 <= value <= 1.0:
            raise LabelingError(f"the grading function gave {value} for question {question.id!r}; scores are in [0, 1]")
        return value


class LLMJudge(BaseModel):
    """A judge model rates the answer against the reference on ``JUDGE_RUBRIC`` (1-5 -> [0, 1])."""

    judge: Judge
    async def score(self, question: Question, answer: str, reference: str | None, calls: Calls) -> float | None:
        reference = question.answer if question.answer is not None else reference
        prompt = JUDGE_RUBRIC.format(question=question.prompt, reference=reference, answer=answer or "(empty)")
        reply = await calls.ask(self.judge.name, self.judge.model, self.judge.spec, [{"role": "user", "content": prompt}])
        found = re.search(r"\b[1-5]\b", reply.text)
        return (int(found.group()) - 1) / 4 if found else None


class PairwisePreference(BaseModel):
    """A judge prefers the answer or the reference model's: win 1, tie 0.5, loss 0, both orders averaged."""

    judge: Judge
    async def _verdict(self, question: Question, first: str, second: str, calls: Calls) -> str | None:
        prompt = PAIRWISE_PROMPT.format(question=question.prompt, first=first or "(empty)", second=second or "(empty)")
        reply = await calls.ask(self.judge.name, self.judge.model, self.judge.spec, [{"role": "user", "content": prompt}])
        found = re.search(r"\b(?:(A|B)|(?i:tie))\b", reply.text)
        return None if not found else found.group(1) or "tie"

    async def score(self, question: Question, answer: str, reference: str | None, calls: Calls) -> float | None:
        forward = await self._verdict(question, answer, reference or "", calls)  # the answer is A
        backward = await self._verdict(question, reference or "", answer, calls)  # the answer is B
        points = {("A", True): 1.0, ("B", True): 0.0, ("B", False): 1.0, ("A", False): 0.0}
        scores = [0.5 if v == "tie" else points[(v, first)] for v, first in ((forward, True), (backward, False)) if v]
        return sum(scores) / len(scores) if scores else None


Grader = Match | FunctionGrader | LLMJudge | PairwisePreference


# ----- the run


class Labeler:
    """Run a pool on prompts and grade the answers into a routing dataset.

    ``models`` maps each pool name to its LangChain chat model or LlamaIndex LLM (default: built
    by ``chat_model_for`` from the pool entry). ``reference_model`` is the model whose answer a
    judge uses where a prompt has no reference answer, and the opponent of pairwise preference
    (default: the pool's priciest model by output price, taken as its strongest).
    """

    def __init__(
        self,
        pool: ModelPool,
        grader: Grader,
        models: Mapping[str, Any] | None = None,
        reference_model: str | None = None,
        cache: str | Path | None = None,
        max_concurrency: int = 4,
        max_retries: int = 2,
        retry_wait_s: float = 1.0,
        progress: bool = True,
    ):
        models = dict(models or {})
        unknown = sorted(set(models) - set(pool.names))
        if unknown:
            raise LabelingError(f"models {unknown} are not in the pool {pool.names}")
        self.pool, self.grader, self.progress = pool, grader, progress
        self.models = {name: models.get(name) or chat_model_for(pool[name]) for name in pool.names}
        self.reference_model = reference_model or max(pool.models, key=lambda m: m.price_out_per_mtok).name
        pool[self.reference_model]  # an unknown reference model fails here, naming the pool
        self.calls = Calls(cache, max_concurrency, max_retries, retry_wait_s)

    def label(self, questions: list[Question]) -> LabelReport:
        """Blocking form of ``alabel``."""
        return asyncio.run(self.alabel(questions))

    async def alabel(self, questions: list[Question]) -> LabelReport:
        """Every pool model's graded answer to every question; results are added to copies of the questions."""
        from tqdm.auto import tqdm

        if not questions:
            raise LabelingError("no questions to label")
        failures: list[str] = []
        ungraded = 0
        bar = tqdm(total=len(questions) * len(self.pool), desc="labelling", unit="answer", disable=not self.progress)

        async def answer(question: Question, name: str) -> Answer | None:
            try:
                return await self.calls.ask(name, self.models[name], self.pool[name], question.conversation())
            except (LabelingError, TypeError, AttributeError):
                raise
            except Exception as error:  # a provider error after every retry: recorded, the run goes on
                failures.append(f"{question.id} / {name}: {type(error).__name__}: {error}")
                return None

        async def one(question: Question) -> Question:
            nonlocal ungraded
            names = self.pool.names
            answers = dict(zip(names, await asyncio.gather(*(answer(question, n) for n in names))))
            reference = answers.get(self.reference_model)
            if reference is None and self._needs_reference_answer(question):
                bar.update(len(names))
                return question  # the reference model failed: nothing to grade against
            results = dict(question.results)
            for name, reply in answers.items():
                if reply is not None:
                    score = await self._score(question, name, reply, reference)
                    if score is None:
                        ungraded += 1
                    else:
                        results[name] = ModelResult(score=score, output_tokens=reply.output_tokens, latency_s=reply.latency_s)
                bar.update(1)
            return question.model_copy(update={"results": results})

        try:
            labelled = await asyncio.gather(*(one(q) for q in questions))
        finally:
            bar.close()
        return LabelReport(
            questions=labelled,
            cost_usd=dict(self.calls.cost_usd),
            cached_calls=self.calls.cached,
            new_calls=self.calls.new,
            failures=failures,
            ungraded=ungraded,
        )

    def _needs_reference_answer(self, question: Question) -> bool:
        """Whether grading compares with the reference model's answer (pairwise; a judge without a reference answer)."""
        return isinstance(self.grader, PairwisePreference) or (isinstance(self.grader, LLMJudge) and question.answer is None)

    async def _score(self, question: Question, name: str, reply: Answer, reference: Answer | None) -> float | None:
        if name == self.reference_model and self._needs_reference_answer(question):
            return 0.5 if isinstance(self.grader, PairwisePreference) else 1.0  # the reference against itself
        return await self.grader.score(question, reply.text, reference.text if reference else None, self.calls)
