"""Each language's own test suite and example program, run against the shared live servers.

The suites (clients/go: go test, clients/typescript: node --test, clients/java: JUnit via Maven) check a
greedy generation against the Python SyncClient's result, cancellation ending the stream with the abort
counted in the server's metrics, INVALID_ARGUMENT naming the field, and the stepped mode through
AddRequest + Step. The examples must print the same greedy text.
"""

from __future__ import annotations

import re

from .conftest import ROOT, run, tail

GO = ROOT / "clients/go"
TS = ROOT / "clients/typescript"
JAVA = ROOT / "clients/java"
MVN = ["mvn", "-B", "--no-transfer-progress"]


def test_go_client_suite(polyglot_env, idle_after):
    fmt = run(["gofmt", "-l", "."], cwd=GO, env=polyglot_env)
    assert fmt.returncode == 0 and not fmt.stdout.strip(), "not gofmt-clean:\n" + tail(fmt)
    vet = run(["go", "vet", "./..."], cwd=GO, env=polyglot_env)
    assert vet.returncode == 0, tail(vet)
    proc = run(["go", "test", "-count=1", "-v", "./..."], cwd=GO, env=polyglot_env)
    assert proc.returncode == 0, tail(proc)
    passed = set(re.findall(r"^--- PASS: (\w+)", proc.stdout, re.M))
    assert {"TestGreedyGenerateMatchesPythonClient", "TestCancelEndsStreamAndAbortsRequest",
            "TestInvalidArgumentNamesTheField", "TestSteppedModeAddRequestAndStep",
            "TestFollowChatTokenizeAndModelInfo"} <= passed, tail(proc)


def test_go_example(polyglot_env, expected, idle_after):
    proc = run(["go", "run", "./cmd/spindle-generate", "-target", polyglot_env["SPINDLE_TEST_TARGET"],
                "-max-tokens", str(expected["max_tokens"]), expected["prompt"]], cwd=GO, env=polyglot_env)
    assert proc.returncode == 0, tail(proc)
    assert proc.stdout.startswith(expected["text"] + "\n[FINISH_REASON_"), tail(proc)


def test_typescript_client_suite(polyglot_env, idle_after):
    proc = run(["npm", "test", "--silent"], cwd=TS, env=polyglot_env)
    assert proc.returncode == 0, tail(proc)
    assert re.search(r"^# pass (\d+)", proc.stdout, re.M) and re.search(r"^# fail 0$", proc.stdout, re.M), tail(proc)
    assert int(re.search(r"^# pass (\d+)", proc.stdout, re.M).group(1)) >= 7, tail(proc)


def test_typescript_example(polyglot_env, expected, idle_after):
    # npm test above compiled dist/; this incremental build is a no-op then, and compiles when run alone.
    build = run([str(TS / "node_modules/.bin/tsc"), "-p", "tsconfig.json"], cwd=TS, env=polyglot_env)
    assert build.returncode == 0, tail(build)
    proc = run(["node", "dist/examples/generate.js", "--target", polyglot_env["SPINDLE_TEST_TARGET"],
                "--max-tokens", str(expected["max_tokens"]), expected["prompt"]], cwd=TS, env=polyglot_env)
    assert proc.returncode == 0, tail(proc)
    assert proc.stdout.startswith(expected["text"] + "\n[FINISH_REASON_"), tail(proc)


def test_java_client_suite(polyglot_env, idle_after):
    proc = run(MVN + ["test"], cwd=JAVA, env=polyglot_env, timeout=900)
    assert proc.returncode == 0, tail(proc)
    runs = re.findall(r"Tests run: (\d+), Failures: (\d+), Errors: (\d+), Skipped: (\d+)", proc.stdout)
    assert runs, tail(proc)
    total, failures, errors, skipped = map(int, runs[-1])
    assert total >= 7 and failures == errors == skipped == 0, tail(proc)


def test_java_example(polyglot_env, expected, idle_after):
    args = f"--target {polyglot_env['SPINDLE_TEST_TARGET']} --max-tokens {expected['max_tokens']} {expected['prompt']}"
    proc = run(MVN + ["-q", "compile", "exec:java", f"-Dexec.args={args}"], cwd=JAVA, env=polyglot_env, timeout=900)
    assert proc.returncode == 0, tail(proc)
    assert expected["text"] + "\n[FINISH_REASON_" in proc.stdout, tail(proc)
