"""Flags as ack-secret-manager's Deployments pass them (Go's `flag` syntax), the defaults they
relied on, and start-up checks that refuse a bad value in one line before anything is
contacted (issue 21, items 1, 5 and 11)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller import __version__, buildinfo, settings
from controller.goflags import GO_FALSE, GO_TRUE, FlagError, parse_go_int
from controller.settings import Settings

REPO = pathlib.Path(__file__).resolve().parents[2]

# Every flag of every released ack-secret-manager version (cmd/manager/main.go, 2020 to the
# newest upstream): name -> a valid value (None: a boolean).
ORIGINAL_FLAGS: dict[str, str | None] = {
    "backend": "alicloud-kms",
    "enable-leader-election": None,
    "leader-election-namespace": "kube-system",
    "polling-interval": "120s",
    "disable-polling": None,
    "token-rotation-period": "120s",
    "reconcile-period": "5s",
    "reconcile-count": "1",
    "region": "cn-beijing",
    "watch-namespaces": "team-a,team-b",
    "exclude-namespaces": "kube-public",
    "max-concurrent-secret-pulls": "10",
    "max-concurrent-kms-secret-pulls": "10",
    "max-concurrent-oos-secret-pulls": "10",
    "enable-worker-role": None,
    "kms-endpoint": "kms.cn-beijing.aliyuncs.com",
    "cleanup-secret-on-failure": None,
    "process-cluster-secret-store": None,
    "process-cluster-external-secret": None,
    "enable-cross-namespace-secret-store": None,
    "enable-cross-namespace-auth-ref": None,
    "cluster-id": "c0123456789abcdef",
    "uid": "1234567890123456",
    "kubeconfig": None,  # registered by controller-runtime; tested with a real file below
}


def load(*argv: str, env: dict[str, str] | None = None) -> Settings:
    return settings.load(list(argv), env or {})


def refused(*argv: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(FlagError) as err:
        load(*argv, env=env)
    return str(err.value)


# ------------------------------------------------------------------------------ Go's forms


@pytest.mark.parametrize("name", sorted(n for n, v in ORIGINAL_FLAGS.items() if v is not None))
@pytest.mark.parametrize("form", ["--{n}={v}", "-{n}={v}", "--{n} {v}", "-{n} {v}"])
def test_every_valued_flag_in_every_go_form(name: str, form: str) -> None:
    value = ORIGINAL_FLAGS[name]
    assert value is not None
    load(*form.format(n=name, v=value).split(" "))


@pytest.mark.parametrize("name", sorted(n for n, v in ORIGINAL_FLAGS.items()
                                        if v is None and n != "kubeconfig"))
@pytest.mark.parametrize("spelling", [*sorted(GO_TRUE | GO_FALSE), "<bare>"])
@pytest.mark.parametrize("dashes", ["-", "--"])
def test_every_boolean_in_every_parsebool_spelling(name: str, spelling: str,
                                                   dashes: str) -> None:
    arg = f"{dashes}{name}" if spelling == "<bare>" else f"{dashes}{name}={spelling}"
    cfg = load(arg)
    expected = spelling == "<bare>" or spelling in GO_TRUE
    attribute = {"enable-leader-election": "leader_elect"}.get(name, name.replace("-", "_"))
    assert getattr(cfg, attribute) is expected


def test_the_values_mean_what_they_meant() -> None:
    cfg = load("--polling-interval=1h30m", "--disable-polling=false", "--region=",
               "--kms-endpoint=", "--enable-worker-role=true", "-watch-namespaces", "a,b",
               "--exclude-namespaces=c", "--max-concurrent-oos-secret-pulls=0x10",
               "--enable-leader-election=true", "--leader-election-namespace=kube-system",
               "--process-cluster-secret-store=f", "--process-cluster-external-secret=0",
               "--enable-cross-namespace-auth-ref", "--cleanup-secret-on-failure=TRUE")
    assert cfg.polling_interval == 5400.0
    assert cfg.disable_polling is False
    assert (cfg.region, cfg.kms_endpoint) == ("cn-hangzhou", "")  # empty keeps the default
    assert cfg.enable_worker_role is True
    assert (cfg.watch_namespaces, cfg.exclude_namespaces) == (("a", "b"), ("c",))
    assert cfg.max_concurrent_oos_secret_pulls == 16
    assert (cfg.leader_elect, cfg.leader_election_namespace) == (True, "kube-system")
    assert cfg.process_cluster_secret_store is False
    assert cfg.process_cluster_external_secret is False
    assert cfg.enable_cross_namespace_auth_ref is True
    assert cfg.enable_cross_namespace_secret_store is False
    assert cfg.cleanup_secret_on_failure is True


def test_absent_flags_take_the_originals_defaults() -> None:
    cfg = load()
    assert cfg.enable_worker_role is True  # ack-secret-manager v0.5's default
    assert cfg.polling_interval == 120.0 and cfg.disable_polling is False
    assert cfg.max_concurrent_kms_secret_pulls == cfg.max_concurrent_oos_secret_pulls == 10
    assert cfg.process_cluster_secret_store is cfg.process_cluster_external_secret is True
    assert cfg.enable_cross_namespace_secret_store is False
    assert cfg.enable_cross_namespace_auth_ref is False
    assert cfg.cleanup_secret_on_failure is False
    assert cfg.max_cas_per_namespace == 8 and load(
        "--max-cas-per-namespace=0").max_cas_per_namespace == 0  # 0: no bound
    assert cfg == Settings(credentials=cfg.credentials)  # the dataclass agrees


def test_the_deprecated_pull_limit_counts_only_alone() -> None:
    assert load("--max-concurrent-secret-pulls=3").max_concurrent_kms_secret_pulls == 3
    both = load("--max-concurrent-secret-pulls=3", "--max-concurrent-kms-secret-pulls=7")
    assert both.max_concurrent_kms_secret_pulls == 7


def test_a_kubeconfig_flag_names_a_file(tmp_path: pathlib.Path) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text("apiVersion: v1\n")
    assert load(f"-kubeconfig={config}").kubeconfig == str(config)
    assert "--kubeconfig" in refused("--kubeconfig", str(tmp_path / "missing"))


def test_a_boolean_never_takes_the_next_argument() -> None:
    # Go: `--disable-polling false` is the flag (true) and a stray argument.
    assert "unrecognized arguments: false" in refused("--disable-polling", "false")


@pytest.mark.parametrize("argv", [["--v=4"], ["--version=x"], ["--polling=1s"],
                                  ["--disable=true"], ["--max-concurrent=3"]])
def test_abbreviations_are_refused(argv: list[str]) -> None:
    assert "unrecognized arguments" in refused(*argv) or "ignored explicit" in refused(*argv)


@pytest.mark.parametrize(("argv", "names"), [
    (["--disable-polling=maybe"], "--disable-polling"),
    (["--disable-polling="], "--disable-polling"),
    (["--polling-interval=120"], None),  # plain seconds: accepted leniently
    (["--polling-interval=2d"], "--polling-interval"),
    (["--reconcile-period=soon"], "--reconcile-period"),
    (["--reconcile-count=one"], "--reconcile-count"),
    (["--max-concurrent-kms-secret-pulls="], "--max-concurrent-kms-secret-pulls"),
    (["--backend=vault"], "--backend"),
    (["--region"], "--region"),
])
def test_malformed_values_name_their_flag(argv: list[str], names: str | None) -> None:
    if names is None:
        load(*argv)
        return
    message = refused(*argv)
    assert names in message and "\n" not in message


@given(st.sampled_from(sorted(GO_TRUE | GO_FALSE)))
def test_parsebool_vocabulary(spelling: str) -> None:
    assert load(f"--disable-polling={spelling}").disable_polling is (spelling in GO_TRUE)


@given(st.text(max_size=8).filter(lambda t: t not in GO_TRUE | GO_FALSE))
def test_anything_else_is_not_a_boolean(text: str) -> None:
    with pytest.raises(FlagError):
        settings.load([f"--disable-polling={text}"], {})


@given(st.integers(min_value=0, max_value=10**9))
def test_go_integers_in_every_base(n: int) -> None:
    for text in (str(n), hex(n), oct(n), bin(n), f"0{n:o}" if n else "0"):
        assert parse_go_int(text) == n


@given(st.integers(0, 99), st.integers(0, 59), st.integers(0, 59))
def test_go_durations(h: int, m: int, s: int) -> None:
    cfg = load(f"--polling-interval={h}h{m}m{s + 1}s", "--reconcile-period", f"{s}s")
    assert cfg.polling_interval == h * 3600 + m * 60 + s + 1


# ------------------------------------------------------------------- checks at start-up


@pytest.mark.parametrize(("argv", "env", "names"), [
    (["--metrics-bind-address", "foo"], {}, "--metrics-bind-address"),
    (["--health-probe-bind-address=:99999"], {}, "--health-probe-bind-address"),
    (["--lease-duration", "5s", "--renew-deadline", "10s"], {}, "--lease-duration"),
    (["--renew-deadline=3s", "--retry-period=3s"], {}, "--retry-period"),
    (["--workers", "0"], {}, "--workers"),
    (["--min-refresh-interval=2h", "--max-refresh-interval=1h"], {}, "--min-refresh-interval"),
    (["--watch-namespaces=a,b", "--exclude-namespaces=b"], {}, "both watched"),
    (["--exclude-namespaces=b"], {"WATCH_NAMESPACE": "b"}, "both watched"),
    (["--watch-namespaces=Team_A"], {}, "--watch-namespaces"),
    (["--polling-interval=0s"], {}, "--polling-interval"),
    (["--polling-interval=-5s"], {}, "--polling-interval"),
    (["--shutdown-timeout=0s"], {}, "--shutdown-timeout"),
    (["--max-concurrent-kms-secret-pulls=0"], {}, "--max-concurrent-kms-secret-pulls"),
    (["--leader-election-id=Not Valid"], {}, "--leader-election-id"),
    (["--region=cn hangzhou"], {}, "--region"),
    (["--max-cas-per-namespace=-1"], {}, "--max-cas-per-namespace"),
])
def test_contradictions_and_bad_values_are_refused(argv: list[str], env: dict[str, str],
                                                   names: str) -> None:
    message = refused(*argv, env=env)
    assert names in message and "\n" not in message


@pytest.mark.parametrize("address", ["0", ":8080", "127.0.0.1:0", "[::1]:9090",
                                     "localhost:8081", ":0"])
def test_good_addresses(address: str) -> None:
    assert load(f"--metrics-bind-address={address}").metrics_bind_address == address


def _run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, **(env or {})}
    environ.pop("KUBECONFIG", None)
    return subprocess.run([sys.executable, "-m", "controller", *argv], capture_output=True,
                          text=True, timeout=60, env=environ, cwd=REPO)


@pytest.mark.parametrize("argv", [
    ["--metrics-bind-address", "foo"],
    ["--lease-duration", "5s", "--renew-deadline", "10s"],
    ["--workers", "0"],
    ["--min-refresh-interval=2h", "--max-refresh-interval=1h"],
    ["--watch-namespaces=a", "--exclude-namespaces=a"],
    ["--v=4"],
    ["--disable-polling=maybe"],
    ["--kubeconfig", "/nonexistent"],
    ["reencrypt", "--kubeconfig", "/nonexistent"],
    ["reencrypt", "--qps", "0"],
    ["reencrypt", "--dry-run=maybe"],
    ["kms-plugin", "--key-id", "k", "--metrics-bind-address", "foo"],
    ["kms-plugin", "--key-id", "k", "--log-level=loud"],
])
def test_a_bad_command_line_is_one_stderr_line_and_exit_2(argv: list[str]) -> None:
    proc = _run(*argv, env={"ACCESS_KEY_ID": "x", "SECRET_ACCESS_KEY": "y"})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ack-secret-manager")
    assert "Traceback" not in proc.stderr and proc.stdout == ""


# ------------------------------------------------------------------------ help and version


def test_help_names_the_subcommands_and_version_the_commit() -> None:
    help_text = _run("--help").stdout
    assert "kms-plugin" in help_text and "reencrypt" in help_text
    version = _run("--version").stdout.strip()
    assert version == f"ack-secret-manager {__version__} (commit {buildinfo.commit()})"
    assert buildinfo.commit() != "unknown"  # the tests run from a git checkout
    env_version = _run("--version", env={buildinfo.ENV: "abcdef0123456"}).stdout.strip()
    assert env_version.endswith("(commit abcdef0123456)")
    for sub in ("kms-plugin", "reencrypt"):
        assert _run(sub, "--version").stdout.strip() == version


def test_commit_from_the_checkout(tmp_path: pathlib.Path) -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    git = tmp_path / ".git"
    (git / "refs/heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    assert buildinfo._git_head(tmp_path) == ""
    (git / "packed-refs").write_text(f"# pack-refs\n{sha} refs/heads/main\n")
    assert buildinfo._git_head(tmp_path) == sha
    (git / "HEAD").write_text(sha.replace("0", "a") + "\n")  # detached
    assert buildinfo._git_head(tmp_path) == sha.replace("0", "a")
    # a worktree: .git is a file naming its own directory, refs live in the common one
    wt = tmp_path / "wt"
    wt_git = git / "worktrees/wt"
    wt_git.mkdir(parents=True)
    wt.mkdir()
    (wt / ".git").write_text(f"gitdir: {wt_git}\n")
    (wt_git / "HEAD").write_text("ref: refs/heads/main\n")
    (wt_git / "commondir").write_text("../..\n")
    assert buildinfo._git_head(wt) == sha
    assert buildinfo._git_head(tmp_path / "nowhere") == ""


@pytest.mark.parametrize("sub", ["kms-plugin", "reencrypt"])
def test_every_subcommand_takes_the_log_flags(sub: str) -> None:
    help_text = _run(sub, "--help").stdout
    assert "--log-format" in help_text and "--log-level" in help_text
