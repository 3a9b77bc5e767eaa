"""Any OpenAI client, personalised within bounds: change the base URL (and name the user).

Runs offline: it starts `persona-mw serve` (embedded defaults: in-memory store, the offline
demo model, no auth on loopback), sets a profile through the profile API, and asks the same
question before and after.

    .venv/bin/python examples/openai_client.py

Against a server you run yourself (`persona-mw serve --config persona.yaml`), the two lines are:

    client = OpenAI(base_url="http://127.0.0.1:8080/v1", api_key=YOUR_APP_KEY)
    client.chat.completions.create(model=..., messages=..., user="ada")   # or X-Persona-User
"""

from __future__ import annotations

import os

import httpx
from openai import OpenAI
from persona_mw_server.testing import ServerProcess

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
QUESTION = [{"role": "user", "content": "How can I sleep better?"}]

with ServerProcess() as server:  # = `persona-mw serve --port <free port>`
    client = OpenAI(base_url=server.base_url + "/v1", api_key="no-keys-configured")  # line 1
    model = client.models.list().data[0].id  # "persona-demo/offline"

    before = client.chat.completions.create(
        model=model, messages=QUESTION, user="ada"
    )  # line 2: user=
    print("before:", before.choices[0].message.content)

    # Ada's own (tier-3) preferences, through the profile API (JSON merge patch).
    httpx.patch(
        server.base_url + "/v1/users/ada/profile",
        json={
            "consent": {"personalisation": True},
            "style": {"verbosity": "terse", "language": "es"},
        },
    ).raise_for_status()

    stream = client.chat.completions.create(model=model, messages=QUESTION, user="ada", stream=True)
    print(
        "after: ",
        "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices),
    )
    # The reply changes once a personalisation stage is in the pipeline; the policy lists them.
    print("input stages:", httpx.get(server.base_url + "/v1/policy").json()["stages"]["input"])
