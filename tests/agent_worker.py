"""One worker process of a human-in-the-loop agent thread checkpointed in SQLite (for test_agents).

``python tests/agent_worker.py first DB``: the best model is down; the agent asks for a tool and stops
at the interrupt. ``... resume DB``: a fresh process resumes the thread with every model up. Each prints
the models that answered the thread's model calls, as JSON, on its last line.
"""

import json
import sqlite3
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent.parent), str(Path(__file__).parent)]  # as pytest sees the tests

from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command

from langchain_routoo import RoutooChatModel
from tests.conftest import TRIO, ScriptedChatModel
from tests.test_agents import add, answered_by, tool_router


def main(phase: str, database: str) -> None:
    models = {name: ScriptedChatModel(name=name, reply=f"answer from {name}") for name in TRIO}
    if phase == "first":
        models[TRIO[2]].error = "503 upstream overloaded"
    routoo = RoutooChatModel(models=models, router=tool_router(), sticky=True)
    agent = create_agent(routoo, tools=[add], checkpointer=SqliteSaver(sqlite3.connect(database, check_same_thread=False)),
                         middleware=[HumanInTheLoopMiddleware(interrupt_on={"add": True})])
    config = {"configurable": {"thread_id": "conversation-1"}, "recursion_limit": 10}
    if phase == "first":
        result = agent.invoke({"messages": [("user", "What is 1 + 2? Use the add tool.")]}, config)
    else:
        result = agent.invoke(Command(resume={"decisions": [{"type": "approve"}]}), config)
    print(json.dumps({"interrupted": "__interrupt__" in result, "models": answered_by(result["messages"])}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
