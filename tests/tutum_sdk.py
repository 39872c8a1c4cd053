"""autokill's /api/v1 driven by python-tutum 0.21.2, the SDK Tutum's users had.

Run by tests/tutum_sdk.rs against a real `autokill serve`:

    python tutum_sdk.py ADMIN_URL PROXY_ADDR USER APIKEY

Every call goes through the SDK as its users made them: Service.create(...).save(),
service.start(), attribute changes and save() (a PATCH of only the changed fields),
service.scale(), service.redeploy(), service.delete(), Container.fetch/list, Utils, Action.
Exits 0 when every check held; prints the first that did not and exits 1.

python-tutum 0.21.2 is a Python 2 library. Under Python 3 the few runtime names it relies on
(collections.Mapping, urljoin of a bytes path, base64 of a str) are adapted before it is
imported (and `basestring` given); what it sends on the wire is unchanged. Its pinned
dependencies (six 1.9, future 0.15, requests 2.7) import on Python 2.7 and 3 up to 3.11.
"""
from __future__ import print_function

import base64
import sys
import time

if sys.version_info[0] >= 3:
    import builtins
    import collections
    import collections.abc
    import urllib.parse

    for _name in ("Mapping", "MutableMapping", "Sequence", "Iterable", "Callable", "MutableSet"):
        setattr(collections, _name, getattr(collections.abc, _name))
    builtins.basestring = str
    _urljoin = urllib.parse.urljoin
    urllib.parse.urljoin = lambda base, url, *a: _urljoin(
        base, url.decode("ascii") if isinstance(url, bytes) else url, *a
    )
    _b64encode = base64.b64encode
    base64.b64encode = lambda s, *a: _b64encode(
        s.encode("utf-8") if isinstance(s, str) else s, *a
    ).decode("ascii")

import requests  # noqa: E402  (python-tutum's own dependency, 2.7.0)
import tutum  # noqa: E402

ADMIN, PROXY, USER, APIKEY = sys.argv[1:5]
tutum.base_url = ADMIN.rstrip("/") + "/api/v1/"
tutum.user = USER
tutum.apikey = APIKEY


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def eventually(what, fn, timeout=20.0):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError("timed out waiting for %s (last: %r)" % (what, last))


def container_uuid(uri):
    return uri.strip("/").split("/")[-1]


def exit_with(name, code):
    r = requests.get(
        "http://%s/__exit/%d" % (PROXY, code), headers={"Host": "%s.localhost" % name}
    )
    check(r.status_code == 200, "%s exit %d: %s %s" % (name, code, r.status_code, r.text))


def refreshed(obj):
    obj.refresh(force=True)
    return obj


def state_is(obj, state):
    return lambda: refreshed(obj).state == state


def fetch_container(uuid):
    return tutum.Container.fetch(uuid)


# ---- credentials -----------------------------------------------------------------------------
tutum.auth.verify_credential(USER, APIKEY)
try:
    tutum.auth.verify_credential(USER, "wrong")
    raise AssertionError("a wrong API key was accepted")
except tutum.TutumAuthError:
    pass
print("credentials: ok")

# ---- every autodestroy against exit 0 and 3, autorestart OFF / ON_FAILURE (and ALWAYS) -------
cases = []
for restart in ("OFF", "ON_FAILURE"):
    for destroy in ("OFF", "ON_FAILURE", "ON_SUCCESS", "ALWAYS"):
        for code in (0, 3):
            failed = code != 0
            if restart == "ON_FAILURE" and failed:
                then = "Running"
            elif (destroy == "ALWAYS") or (destroy == "ON_FAILURE" and failed) or (
                destroy == "ON_SUCCESS" and not failed
            ):
                then = "Terminated"
            else:
                then = "Stopped"
            cases.append((restart, destroy, code, then))
cases.append(("ALWAYS", "OFF", 0, "Running"))
cases.append(("ALWAYS", "OFF", 3, "Running"))

services = []
for i, (restart, destroy, code, then) in enumerate(cases):
    s = tutum.Service.create(
        image="hello",
        name="sdk-%d" % i,
        target_num_containers=1,
        autorestart=restart,
        autodestroy=destroy,
    )
    check(s.save(), "save of sdk-%d" % i)
    check(s.state == "Init", "sdk-%d created: %s" % (i, s.state))
    check(s.tutum_action_uri.startswith("/api/v1/action/"), "an action URI")
    check(s.start(), "start of sdk-%d" % i)
    services.append(s)
containers = []
for i, s in enumerate(services):
    eventually("sdk-%d Running" % i, state_is(s, "Running"))
    c = fetch_container(container_uuid(s.containers[0]))
    check(c.name == "sdk-%d-1" % i and c.state == "Running", "sdk-%d-1: %s" % (i, c.state))
    containers.append(c)
for i, (restart, destroy, code, then) in enumerate(cases):
    exit_with("sdk-%d-1" % i, code)
for i, (restart, destroy, code, then) in enumerate(cases):
    what = "sdk-%d (%s, %s, exit %d) -> %s" % (i, restart, destroy, code, then)
    c = containers[i]
    eventually(what, lambda: refreshed(c).state == then and c.exit_code == code)
    if then == "Terminated":
        check(c.destroyed_datetime, what + ": destroyed_datetime")
        check(refreshed(services[i]).current_num_containers == 0, what + ": service empty")
print("autodestroy table (%d cases): ok" % len(cases))

# ---- PATCH of autodestroy on a running service: the next stop decides by it -------------------
web = tutum.Service.create(image="hello", name="web", target_num_containers=2)
web.save()
web.start()
eventually("web Running", state_is(web, "Running"))
web.autodestroy = "ALWAYS"
check(web.save(), "PATCH of autodestroy")  # only the changed field is sent
check(web.autodestroy == "ALWAYS" and web.target_num_containers == 2, "after PATCH")
first, second = [fetch_container(container_uuid(u)) for u in web.containers]
check(first.autodestroy == "ALWAYS", "the container took the new autodestroy")
exit_with(first.name, 0)
eventually("web-1 Terminated", state_is(first, "Terminated"))
web.autodestroy = "OFF"
web.save()
exit_with(second.name, 0)
eventually("web-2 Stopped", state_is(second, "Stopped"))
print("patch of autodestroy: ok")

# ---- scale up and down, redeploy ------------------------------------------------------------
web.start()
web.target_num_containers = 3
web.save()
check(web.scale(), "scale")
eventually("web scaled to 3 Running", lambda: refreshed(web).state == "Running"
           and web.current_num_containers == 3)
web.target_num_containers = 1
web.save()
web.scale()
eventually("web scaled to 1", lambda: refreshed(web).state == "Running"
           and web.current_num_containers == 1)
before = set(web.containers)
check(web.redeploy(), "redeploy")  # sends ?reuse_volumes=True
# The SDK keeps the last answer's X-Tutum-Action-URI (a GET's is empty): take it now.
redeploy_action = web.tutum_action_uri
eventually("web redeployed", lambda: refreshed(web).state == "Running"
           and set(web.containers).isdisjoint(before))
check(len(web.containers) == 1, "redeploy keeps the target: %r" % web.containers)
action = tutum.Utils.fetch_by_resource_uri(redeploy_action)
eventually("the redeploy's action ends", lambda: refreshed(action).state == "Success")
check(action.action == "Service Redeploy", "action: %s" % action.action)
print("scale and redeploy: ok")

# ---- containers: stop, start, terminate ------------------------------------------------------
c = fetch_container(container_uuid(web.containers[0]))
c.stop()
eventually("container stopped", state_is(c, "Stopped"))
c.start()
eventually("container running", state_is(c, "Running"))
check(tutum.Utils.fetch_remote_container(c.name).uuid == c.uuid, "fetch_remote_container")
check(tutum.Utils.fetch_remote_service("web").uuid == web.uuid, "fetch_remote_service by name")
check(tutum.Utils.fetch_remote_service(web.uuid[:8]).uuid == web.uuid, "by short UUID")
check([x.uuid for x in tutum.Container.list(service=web.resource_uri, state="Running")]
      == [c.uuid], "Container.list by service and state")
print("containers: ok")

# ---- terminate ---------------------------------------------------------------------------------
check(web.delete(), "delete")
check(web.state == "Terminating", "delete answers Terminating: %s" % web.state)
eventually("web Terminated", lambda: tutum.Service.fetch(web.uuid).state == "Terminated")
check(any(s.uuid == web.uuid for s in tutum.Service.list(state="Terminated")), "listed as Terminated")
print("terminate: ok")

# ---- pagination over more than one page ------------------------------------------------------
made = set()
for i in range(30):
    s = tutum.Service.create(image="hello", name="page-%02d" % i, target_num_containers=0)
    s.save()
    made.add(s.uuid)
listed = tutum.Service.list()
uuids = [s.uuid for s in listed]
check(len(uuids) == len(set(uuids)), "no service twice across pages")
check(made <= set(uuids), "every service, across pages")
check(len(tutum.Service.list(limit=5)) == 5, "list(limit=5)")
check(len(tutum.Service.list(name="page-07")) == 1, "list(name=...)")
print("pagination (%d services): ok" % len(uuids))

# ---- bad input -----------------------------------------------------------------------------------
for kwargs, field in (
    (dict(image="hello", autodestroy="SOMETIMES"), "autodestroy"),
    (dict(image="hello", target_num_containers=-1), "target_num_containers"),
    (dict(image="hello", autorestart="ALWAYS", autodestroy="ON_FAILURE"), "autodestroy"),
    (dict(image="nope"), "image"),
):
    try:
        tutum.Service.create(**kwargs).save()
        raise AssertionError("accepted: %r" % kwargs)
    except tutum.TutumApiError as e:
        check("Status 400" in str(e) and field in str(e), "%r: %s" % (kwargs, e))
print("bad input: ok")

# ---- the ApiKey header (TUTUM_AUTH) ----------------------------------------------------------------
tutum.user = None
tutum.apikey = None
tutum.basic_auth = None
tutum.tutum_auth = "ApiKey %s:%s" % (USER, APIKEY)
check(len(tutum.Service.list(name="page-00")) == 1, "ApiKey auth")
print("ApiKey: ok")
print("python-tutum %s: all checks passed" % tutum.__version__)
