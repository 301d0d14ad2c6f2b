"""The ``zmicro`` command end to end: a real service in its own process, the
CLI run as ``python -m zmicro`` against the same private registry."""

from __future__ import annotations

import json

import msgspec
import pytest

from zmicro import cli

from .conftest import private_dir, run_cli
from .service import HelloReply, HelloRequest

BIG = "30"  # --timeout for calls expected to succeed: the machine may be loaded


def call(service, *args, input=None, env=None):
    return run_cli("call", *args, input=input, env=env or service.env)


def assert_ok(result) -> object:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def assert_rpc_error(result, code: str) -> str:
    """The status and the one `error: CODE: detail` line; returns the detail."""
    assert result.returncode == cli.EXIT_FAILED, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    prefix = f"error: {code}: "
    assert lines[0].startswith(prefix), lines[0]
    return lines[0][len(prefix):]


def assert_usage_error(result, *needles: str) -> None:
    assert result.returncode == cli.EXIT_USAGE, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    for needle in needles:
        assert needle in result.stderr


def test_exit_statuses_are_the_documented_ones():
    assert (cli.EXIT_FAILED, cli.EXIT_USAGE, cli.EXIT_ENVIRONMENT) == (1, 2, 3)


# -- call ----------------------------------------------------------------------


def test_call_with_a_json_argument(service):
    reply = assert_ok(call(service, "greeter", "Greeter.Hello", '{"name": "Ada"}',
                           "--timeout", BIG))
    assert reply == {"message": "Hello Ada"}


def test_call_prints_indented_json(service):
    result = call(service, "greeter", "Greeter.Hello", '{"name": "Ada"}', "--timeout", BIG)
    assert result.stdout == '{\n  "message": "Hello Ada"\n}\n'


@pytest.mark.parametrize("args", [(), ("-",)], ids=["omitted", "dash"])
def test_call_reads_the_body_from_stdin(service, args):
    result = call(service, "greeter", "Greeter.Hello", *args, "--timeout", BIG,
                  input='{"name": "Bob", "times": 2}\n')
    assert assert_ok(result) == {"message": "Hello Bob, Hello Bob"}


def test_call_a_node_by_address_without_the_registry(service, tmp_path_factory):
    # An empty registry: only --address can find the node.
    env = {**service.env, "ZMICRO_REGISTRY_DIR": str(private_dir(tmp_path_factory, "empty"))}
    result = call(service, "greeter", "Greeter.Hello", '{"name": "Cy"}',
                  "--address", service.address, "--timeout", BIG, env=env)
    assert assert_ok(result) == {"message": "Hello Cy"}
    # ...and without it the service is unknown there.
    result = call(service, "greeter", "Greeter.Hello", '{"name": "Cy"}', env=env)
    assert_rpc_error(result, "UNAVAILABLE")


def test_call_with_an_explicit_registry_dir(service, tmp_path_factory):
    env = {**service.env, "ZMICRO_REGISTRY_DIR": str(private_dir(tmp_path_factory, "other"))}
    result = call(service, "greeter", "Greeter.Hello", '{"name": "Di"}', "--timeout", BIG,
                  "--registry-dir", str(service.registry_dir), env=env)
    assert assert_ok(result) == {"message": "Hello Di"}


def test_call_sends_metadata(service):
    result = call(service, "greeter", "Echo.Metadata", "null", "--timeout", BIG,
                  "--metadata", "user=ada", "-m", "expr=a=b", "-m", "empty=")
    assert assert_ok(result) == {"user": "ada", "expr": "a=b", "empty": ""}


@pytest.mark.parametrize("content_type", ["application/json", "application/msgpack"])
def test_call_round_trips_values(service, content_type):
    value = {"ints": [1, -2, 2**40], "float": 1.5, "text": "héllo", "none": None,
             "nested": {"ok": True}}
    result = call(service, "greeter", "Echo.Echo", json.dumps(value), "--timeout", BIG,
                  "--content-type", content_type)
    assert assert_ok(result) == value


def test_bytes_in_a_msgpack_reply_are_base64(service):
    result = call(service, "greeter", "Echo.Bytes", "null", "--timeout", BIG,
                  "--content-type", "application/msgpack")
    assert assert_ok(result) == {"blob": "AAF6bWljcm8=", "text": "plain"}
    assert "base64" in result.stderr


def test_invalid_request_names_the_field(service):
    result = call(service, "greeter", "Greeter.Hello", '{"name": 42}', "--timeout", BIG)
    detail = assert_rpc_error(result, "INVALID_ARGUMENT")
    assert "$.name" in detail


def test_missing_field_is_invalid_argument(service):
    result = call(service, "greeter", "Greeter.Hello", '{}', "--timeout", BIG,
                  "--content-type", "application/msgpack")
    assert "name" in assert_rpc_error(result, "INVALID_ARGUMENT")


def test_unknown_endpoint_is_unimplemented(service):
    result = call(service, "greeter", "Greeter.Nope", "{}", "--timeout", BIG)
    assert "Greeter.Nope" in assert_rpc_error(result, "UNIMPLEMENTED")


def test_unknown_service_is_unavailable(service):
    result = call(service, "nobody", "Greeter.Hello", "{}", "--timeout", BIG)
    assert "nobody" in assert_rpc_error(result, "UNAVAILABLE")


def test_handler_failure_is_internal_without_details(service):
    result = call(service, "greeter", "Fail.Boom", "{}", "--timeout", BIG)
    assert assert_rpc_error(result, "INTERNAL") == "internal error"
    assert "secret" not in result.stderr


def test_handler_error_code_reaches_the_caller(service):
    result = call(service, "greeter", "Fail.NotFound", "{}", "--timeout", BIG)
    assert assert_rpc_error(result, "NOT_FOUND") == "no such thing"


def test_deadline_exceeded(service):
    # The handler outlives any plausible scheduling delay by far; the CLI
    # gives up after its timeout and the service sees the cancel.
    result = call(service, "greeter", "Slow.Wait", "{}", "--timeout", "5")
    assert_rpc_error(result, "DEADLINE_EXCEEDED")


@pytest.mark.parametrize("body", ['{"name": ', "{'name': 1}", "nope", '{"a": 1} x'])
def test_invalid_json_is_a_usage_error(service, body):
    assert_usage_error(call(service, "greeter", "Greeter.Hello", body),
                       "BODY", "not valid JSON")


def test_invalid_json_on_stdin_is_a_usage_error(service):
    assert_usage_error(call(service, "greeter", "Greeter.Hello", input="{]"),
                       "BODY (stdin)", "not valid JSON")


def test_empty_stdin_is_a_usage_error(service):
    assert_usage_error(call(service, "greeter", "Greeter.Hello", input=""), "empty")


@pytest.mark.parametrize("args, needle", [
    (["--metadata", "novalue"], "KEY=VALUE"),
    (["--metadata", "=v"], "KEY=VALUE"),
    (["-m", "a=1", "-m", "a=2"], "twice"),
    (["--address", "localhost:5555"], "--address"),
    (["--timeout", "0"], "--timeout"),
    (["--content-type", "text/plain"], "--content-type"),
])
def test_bad_options_are_usage_errors(service, args, needle):
    assert_usage_error(call(service, "greeter", "Greeter.Hello", "{}", *args), needle)


def test_names_the_wire_refuses_are_usage_errors(service):
    result = call(service, "greeter", "E" * 300, "{}", "--address", service.address)
    assert_usage_error(result)


def test_missing_registry_dir_is_a_usage_error(service, tmp_path):
    result = call(service, "greeter", "Greeter.Hello", "{}",
                  "--registry-dir", str(tmp_path / "missing"))
    assert_usage_error(result, "--registry-dir")


def test_unusable_registry_is_an_environment_error(service, tmp_path):
    open_dir = tmp_path / "open"
    open_dir.mkdir(mode=0o777)
    open_dir.chmod(0o777)  # others may write: the registry refuses to trust it
    result = run_cli("list", "--registry-dir", str(open_dir), env=service.env)
    assert result.returncode == cli.EXIT_ENVIRONMENT, result.stderr
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr


# -- list, describe ------------------------------------------------------------


def test_list_table(service):
    result = run_cli("list", env=service.env)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["SERVICE", "VERSION", "NODES", "ENDPOINTS"]
    assert [row.split() for row in rows] == [["greeter", "1.0.0", "1", "7"]]


def test_list_json(service):
    result = run_cli("list", "--json", env=service.env)
    [entry] = assert_ok(result)
    assert entry["name"] == "greeter" and entry["version"] == "1.0.0"
    assert entry["nodes"] == 1
    assert "Greeter.Hello" in entry["endpoints"]


def test_list_empty_registry(service, tmp_path_factory):
    empty = str(private_dir(tmp_path_factory, "none"))
    result = run_cli("list", "--registry-dir", empty, env=service.env)
    assert result.returncode == 0 and result.stdout == ""
    assert "no services" in result.stderr
    assert assert_ok(run_cli("list", "--json", "--registry-dir", empty, env=service.env)) == []


def test_describe_text(service):
    result = run_cli("describe", "greeter", env=service.env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("greeter 1.0.0\n")
    assert "team=cli-tests" in out
    assert service.address in out
    assert "Greeter.Hello" in out and "Echo.Echo" in out
    assert '"HelloRequest"' in out and '"HelloReply"' in out  # the schemas
    assert "(untyped)" in out


def test_describe_json_has_the_structs_schemas(service):
    [record] = assert_ok(run_cli("describe", "greeter", "--json", env=service.env))
    assert record["name"] == "greeter" and record["version"] == "1.0.0"
    assert record["metadata"] == {"team": "cli-tests"}
    [node] = record["nodes"]
    assert node["address"] == service.address and node["id"].startswith("greeter-")
    endpoints = {e["name"]: e for e in record["endpoints"]}
    assert set(endpoints) == {"Greeter.Hello", "Echo.Echo", "Echo.Metadata", "Echo.Bytes",
                              "Fail.Boom", "Fail.NotFound", "Slow.Wait"}
    hello = endpoints["Greeter.Hello"]
    assert hello["request"] == msgspec.json.schema(HelloRequest)
    assert hello["response"] == msgspec.json.schema(HelloReply)
    assert endpoints["Echo.Echo"]["request"] is None


def test_describe_unknown_service(service):
    result = run_cli("describe", "nobody", env=service.env)
    assert result.returncode == cli.EXIT_FAILED
    assert result.stderr.strip() == "error: service 'nobody' is not registered"


def test_describe_invalid_name_is_a_usage_error(service):
    assert_usage_error(run_cli("describe", "a/b", env=service.env), "SERVICE")


def test_help_and_version(service):
    result = run_cli("--help", env=service.env)
    assert result.returncode == 0
    for command in ("call", "list", "describe"):
        assert command in result.stdout
    result = run_cli("--version", env=service.env)
    assert result.returncode == 0 and "zmicro" in result.stdout


@pytest.mark.parametrize("content_type", ["application/json", "application/msgpack"])
def test_call_with_a_large_reply(service, content_type):
    # Bodies from 64 KiB on travel without a copy: the CLI must read them too.
    value = {"text": "x" * 200_000}
    result = call(service, "greeter", "Echo.Echo", "--timeout", BIG,
                  "--content-type", content_type, input=json.dumps(value))
    assert assert_ok(result) == value
