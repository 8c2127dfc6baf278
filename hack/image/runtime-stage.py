#!/usr/bin/env python3
"""Reads the runtime (last) stage of the Dockerfile, so that hack/image/build.sh gives its
image the same configuration and hack/image/check.sh can compare against it.

The runtime stage must be exactly `FROM scratch`, `COPY --from=build /rootfs /` (the tree
hack/image/rootfs.sh assembles) and then only USER, EXPOSE, ENTRYPOINT and CMD (exec form: the
image has no shell). Anything else is refused with a message, because build.sh would otherwise
silently build a different image than `docker build`. The PATH and working directory that
`docker build` gives every FROM scratch image come with them.

  runtime-stage.py DOCKERFILE            the stage as JSON
  runtime-stage.py DOCKERFILE --buildah  `buildah config` arguments, NUL-separated
"""
import json
import sys

ALLOWED = {"USER", "EXPOSE", "ENTRYPOINT", "CMD"}
# What Docker's builder (BuildKit, dockerfile2llb's emptyImage) gives a FROM scratch stage.
SCRATCH_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
SCRATCH_WORKDIR = "/"


def fail(message):
    print(f"[image] {sys.argv[1]}: {message}", file=sys.stderr)
    sys.exit(1)


def instructions(path):
    """(line number, keyword, rest) for each instruction, continuation lines joined."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    out, buf, start = [], "", 0
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue  # blank, comment or parser directive
        if buf and stripped.startswith("#"):
            continue  # comment inside a continued instruction
        if not buf:
            start = number
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        keyword, _, rest = buf.partition(" ")
        out.append((start, keyword.upper(), rest.strip()))
        buf = ""
    if buf:
        fail("ends inside a continued instruction")
    return out


def exec_form(number, keyword, rest):
    try:
        value = json.loads(rest)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        fail(f"line {number}: {keyword} must be a JSON array (exec form): the image has no shell")
    return value


def runtime_stage(path):
    all_instructions = instructions(path)
    froms = [i for i, (_, keyword, _) in enumerate(all_instructions) if keyword == "FROM"]
    if not froms:
        fail("no FROM")
    stage = all_instructions[froms[-1]:]
    number, _, rest = stage[0]
    if rest.split()[0] != "scratch":
        fail(f"line {number}: the runtime stage must be FROM scratch, not FROM {rest}")
    if len(stage) < 2 or stage[1][1:] != ("COPY", "--from=build /rootfs /"):
        fail("the runtime stage must begin FROM scratch, then COPY --from=build /rootfs / "
             "(the tree hack/image/rootfs.sh assembles)")
    config = {"from": "scratch", "copy": ["--from=build", "/rootfs", "/"],
              "env": SCRATCH_ENV, "workdir": SCRATCH_WORKDIR,
              "user": None, "expose": [], "entrypoint": None, "cmd": None}
    for number, keyword, rest in stage[2:]:
        if keyword not in ALLOWED:
            fail(f"line {number}: {keyword} in the runtime stage: hack/image/build.sh applies only "
                 f"{', '.join(sorted(ALLOWED))} after the COPY; teach it the new instruction")
        if keyword == "USER":
            config["user"] = rest
        elif keyword == "EXPOSE":
            for port in rest.split():
                config["expose"].append(port if "/" in port else port + "/tcp")
        else:
            config[keyword.lower()] = exec_form(number, keyword, rest)
    for key in ("user", "entrypoint", "cmd"):
        if config[key] is None:
            fail(f"the runtime stage has no {key.upper()}")
    return config


def main():
    if len(sys.argv) not in (2, 3) or sys.argv[2:] not in ([], ["--buildah"]):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    config = runtime_stage(sys.argv[1])
    if sys.argv[2:] == ["--buildah"]:
        args = ["--entrypoint", json.dumps(config["entrypoint"]),
                "--cmd", json.dumps(config["cmd"]), "--user", config["user"],
                "--workingdir", config["workdir"]]
        for env in config["env"]:
            args += ["--env", env]
        for port in config["expose"]:
            args += ["--port", port]
        sys.stdout.write("".join(a + "\0" for a in args))
    else:
        print(json.dumps(config, indent=2))


if __name__ == "__main__":
    main()
