"""The installed sources (controller/providers/installed.py) make the API: the spec.provider
names the parsers and the CRDs accept and the store blocks they parse. Adding a source is its
folder plus one line there: here the fake (controller/providers/fake, not installed in
production) is installed by that one line, and the API, the CRD's rules and a sync take it."""

from __future__ import annotations

import importlib.util
import pathlib
from types import ModuleType
from typing import Any

import pytest

from controller import api, settings
from controller.providers import fake, installed
from controller.providers.alibaba.provider import Alibaba
from controller.providers.base import Wiring
from controller.providers.fake import FakeBlock, FakeClient, FakeProvider
from tests.fakes import World, entry

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
VALUE = "fake-value-7f3a"
WITH_FAKE = (*installed.INSTALLED,
             installed.Installed(fake.SHAPE, lambda _wiring: FakeProvider({"db": VALUE})))


def _es(spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "app", "namespace": "team"}, "spec": spec}


def _store(spec: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "SecretStore", "metadata": {"name": "s", "namespace": "team"}, "spec": spec}


def _gen_crds() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_crds", REPO_ROOT / "hack/gen_crds.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_production_installs_the_alibaba_sources_only() -> None:
    shape = installed.shape()
    assert shape.names == ("kms", "oos") and shape.default_provider == "kms"
    assert [b.field for b in shape.blocks] == ["KMS", "OOS"]
    assert shape.provider_pattern == r"^(?i:kms|oos)?$"
    with pytest.raises(api.SpecError, match=r"must be kms or oos \(got 'fake'\)"):
        api.parse_external_secret(_es({"provider": "fake", "data": [{"key": "k"}]}),
                                  shape=shape)
    with pytest.raises(api.SpecError, match="must set exactly one provider, KMS or OOS"):
        api.parse_store(_store({"Fake": {}}), shape)


def test_one_line_installs_the_fake_into_the_api() -> None:
    shape = installed.shape(WITH_FAKE)
    assert shape.names == ("kms", "oos", "fake") and shape.default_provider == "kms"
    for name in ("fake", "FAKE"):
        es = api.parse_external_secret(_es({"provider": name, "data": [{"key": "k"}]}),
                                       shape=shape)
        assert es.spec.provider == "fake"
    with pytest.raises(api.SpecError, match=r"must be kms, oos or fake \(got 'nope'\)"):
        api.parse_external_secret(_es({"provider": "nope", "data": [{"key": "k"}]}),
                                  shape=shape)
    store = api.parse_store(_store({"Fake": {"where": "here.local"}}), shape)
    assert store.blocks == {"Fake": FakeBlock("here.local")}
    assert api.parse_store(_store({"Fake": {}}), shape).blocks == {"Fake": FakeBlock()}
    with pytest.raises(api.SpecError) as caught:
        api.parse_store(_store({"KMS": {}, "Fake": {}}), shape)
    assert caught.value.field == "spec"
    assert "must set exactly one provider, KMS, OOS or Fake" in str(caught.value)
    assert "keep one of spec.KMS, spec.OOS and spec.Fake" in str(caught.value)
    with pytest.raises(api.SpecError) as caught:
        api.parse_store(_store({"Fake": {"where": 3}}), shape)
    assert caught.value.field == "spec.Fake.where"


def test_the_crds_take_the_installed_names_and_blocks() -> None:
    gen = _gen_crds()
    assert gen.one_provider(["KMS", "OOS"]) == {"x-kubernetes-validations": [
        {"rule": "has(self.KMS) != has(self.OOS)",
         "message": "set exactly one provider: spec.KMS or spec.OOS"}]}
    assert gen.one_provider(["KMS", "OOS", "Fake"])["x-kubernetes-validations"] == [
        {"rule": "[has(self.KMS), has(self.OOS), has(self.Fake)].filter(x, x).size() == 1",
         "message": "set exactly one provider: spec.KMS, spec.OOS or spec.Fake"}]
    assert list(gen.STORE_SPEC_PROPS) == ["KMS", "OOS"]
    fake_schema = installed.shape(WITH_FAKE).blocks[-1].schema
    assert fake_schema["description"] and fake_schema["properties"]["where"]["description"]
    assert fake_schema["properties"]["where"]["maxLength"] == api.MAX_FIELD_LENGTH


def test_build_registers_each_installed_source_under_its_shape() -> None:
    wiring = Wiring(settings.load([], {}), on_call=lambda *_a: None,
                    on_identity=lambda _kind: None, tokens=lambda _in_use: None)
    providers = installed.build(wiring, WITH_FAKE)
    try:
        assert isinstance(providers.get("kms"), Alibaba)
        assert providers.get("oos") is providers.get("kms")
        assert isinstance(providers.get("fake"), FakeProvider)
        assert providers.shape == installed.shape(WITH_FAKE)
    finally:
        providers.close()


def test_the_metrics_name_the_endpoints_each_installed_source_takes_from_the_settings() -> None:
    cfg = settings.load(["--region=cn-x", "--oos-endpoint=oos.flag.example",
                         "--allowed-endpoints=kms.team.example:8443,*.wild.example"], {})
    assert installed.named_endpoints(cfg) == (
        "kms-vpc.cn-x.aliyuncs.com", "oos.flag.example", "kms.team.example:8443")
    # the fake names none; a source that names one already named adds it once
    again = installed.Installed(fake.SHAPE, lambda _w: FakeProvider(),
                                lambda _cfg: ("oos.flag.example", "fake.example"))
    assert installed.named_endpoints(cfg, WITH_FAKE) == installed.named_endpoints(cfg)
    assert installed.named_endpoints(cfg, (*installed.INSTALLED, again)) == (
        *installed.named_endpoints(cfg), "fake.example")


def test_an_external_secret_syncs_through_the_installed_fake_and_its_store_block() -> None:
    provider = FakeProvider({"db": VALUE})
    w = World(provider=provider, shape=fake.SHAPE)
    w.add_store("fs", {"where": "here.local"}, block="Fake")
    w.add_es("app", {"provider": "fake", "data": [entry("db", store="fs")]})
    w.reconcile("app")
    assert w.kube.data(w.ns, "app") == {"db": VALUE}
    assert provider.reads == ["db"]
    store = api.parse_store(w.stores[("SecretStore", w.ns, "fs")], w.providers.shape)
    es = api.parse_external_secret(w.kube.external_secrets[(w.ns, "app")],
                                   shape=w.providers.shape)
    client = provider.client_for(es, es.spec.data[0], store, w.resolver)
    assert client == FakeClient(f"SecretStore/{w.ns}/fs", "here.local")
    w.add_es("kms", {"provider": "kms", "data": [entry("db", store="fs")]})
    w.reconcile("kms")
    assert "must be fake (got 'kms')" in w.message("kms")
