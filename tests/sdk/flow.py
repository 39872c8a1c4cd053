"""The high-level flow a user writes with the official Unikraft Cloud SDK, against autokill.

Run by tests/sdk.rs as `python flow.py BASE_URL`; every step checks that the call touched the
resource it meant (a "victim" instance, created first so that it sorts first, must never be
the answer). Prints one line per step and `FLOW OK` at the end; any failure raises.
"""

import asyncio
import base64
import sys

from unikraft_cloud import UnikraftCloud
from unikraft_cloud.core.errors import NotFoundError


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok:", what, flush=True)


async def flow(base):
    async with UnikraftCloud(base_url=base) as ukc:
        victim = await ukc.instances.create(name="victim", image="hello")
        check(victim.name == "victim", "create victim")

        web = await ukc.instances.create(name="web", image="hello", autostart=True, timeout_s=20)
        check(web.name == "web" and web.uuid != victim.uuid, "create and await: the new instance")
        check(web.state == "running", f"create and await: running ({web.state})")

        got = await ukc.instances.get(name="web")
        check(got.uuid == web.uuid, "get by name: that instance")
        got = await ukc.instances.get(uuid=web.uuid)
        check(got.name == "web", "get by uuid: that instance")

        stopped = await ukc.instances.get(name="web").stop()
        check(stopped.uuid == web.uuid, "stop: that instance")
        check(stopped.previous_state == "running", f"stop: previous_state ({stopped.previous_state})")
        waited = await ukc.instances.get(name="web").wait(state="stopped", timeout_seconds=20)
        check(waited.uuid == web.uuid and waited.state == "stopped", "wait until stopped")

        started = await ukc.instances.get(name="web").start()
        check(started.uuid == web.uuid, "start: that instance")
        check(started.previous_state == "stopped", f"start: previous_state ({started.previous_state})")
        waited = await ukc.instances.get(name="web").wait(state="running", timeout_seconds=20)
        check(waited.uuid == web.uuid and waited.state == "running", "wait until running")

        logs = await ukc.instances.get(name="web").logs(offset=0)
        text = base64.b64decode(logs.output).decode()
        check('autokill hello "web": listening' in text, f"logs: the instance's output ({text!r})")

        updated = await ukc.instances.get(name="web").update(autokill={"num_requests": 50})
        check(updated.uuid == web.uuid, "update: that instance")
        again = await ukc.instances.get(name="web")
        check(again.autokill.num_requests == 50, "update: the new budget is read back")
        victim_now = await ukc.instances.get(name="victim")
        check(victim_now.autokill is None or not victim_now.autokill.num_requests, "update: the victim is untouched")

        for n in ("p1", "p2", "p3"):
            await ukc.instances.create(name=n, image="hello")
        names = [i.name async for i in ukc.instances.list(page_size=2)]
        check(sorted(names) == ["p1", "p2", "p3", "victim", "web"], f"list in pages of 2: each once ({names})")
        check(names[0] == "victim", "list: oldest first")

        gone = await ukc.instances.get(name="p1").delete()
        check(gone.uuid != victim.uuid and gone.name == "p1", "delete: that instance")
        check(gone.previous_state == "stopped", f"delete: previous_state ({gone.previous_state})")
        missing = await ukc.instances.get(name="p1").delete(missing_ok=True)
        check(missing is None, "delete with missing_ok: gone already is fine")
        try:
            await ukc.instances.get(name="missing")
            check(False, "get of a missing instance raises")
        except NotFoundError as err:
            check(err.absent, "get of a missing instance: absent, not a missing route")

        group = await ukc.services.create(
            services=[{"port": 443, "destination_port": 8080, "handlers": ["tls", "http"], "protocol": "tcp"}],
            domains=[{"name": "shop"}],
        )
        check(group.name.startswith("sg-"), f"group without a name: generated ({group.name})")
        check(group.domains[0].fqdn == "shop.localhost", "group domains carry fqdn")
        got_group = await ukc.services.get(name=group.name)
        check(got_group.uuid == group.uuid, "group get: that group")
        await ukc.services.get(name=group.name).delete()
        try:
            await ukc.services.get(name=group.name)
            check(False, "a deleted group is gone")
        except NotFoundError as err:
            check(err.absent, "group delete: gone")

        tpl = await ukc.templates.prepare(
            "base", create_args={"image": "hello"}, autokill_ms=600000
        )
        check(tpl.name == "base" and tpl.state == "template", "template prepare: that template")
        check(tpl.template_autokill.time_ms == 600000, "template prepare: its own autokill")
        again = await ukc.templates.prepare("base", create_args={"image": "hello"})
        check(again.uuid == tpl.uuid, "template prepare again: the same template")
        clone = await ukc.templates.get(name="base").clone(name="c1")
        check(clone.name == "c1", "clone: the new instance")
        deleted = await ukc.templates.get(name="base").delete()
        check(deleted.uuid == tpl.uuid, "template delete: that template")
        nothing = await ukc.templates.get(name="base").delete(missing_ok=True)
        check(nothing is None, "template delete with missing_ok")

        await ukc.instances.get(name="web").delete()
        left = sorted([i.name async for i in ukc.instances.list()])
        check(left == ["c1", "p2", "p3", "victim"], f"what is left ({left})")
    print("FLOW OK", flush=True)


if __name__ == "__main__":
    asyncio.run(flow(sys.argv[1]))
