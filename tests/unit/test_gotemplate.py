"""Unit tests for controller.gotemplate: Go text/template + sprig semantics, bounds, errors.

Expected outputs are Go's documented behaviour (text/template, fmt, encoding/json, sprig,
External Secrets Operator and ack-secret-manager v0.6 docs), written down as facts.
"""

from __future__ import annotations

import base64
import gc
import json
import time
import tracemalloc
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.gotemplate import (
    SUPPORTED_FUNCTIONS,
    UNSUPPORTED_FUNCTIONS,
    Limits,
    SyncBudget,
    TemplateError,
    encode_output,
    parse,
    render,
)

MARKER = "MARKER-s3cr3t-9f2c"
NAME = "spec.target.template.data.config.yaml"


def r(text: str, data: dict[str, Any] | None = None, **kwargs: Any) -> str:
    return render(text, data or {}, name=NAME, **kwargs)


def err(text: str, data: dict[str, Any] | None = None, **kwargs: Any) -> TemplateError:
    with pytest.raises(TemplateError) as info:
        r(text, data, **kwargs)
    return info.value


# ---- examples from the ESO and ack-secret-manager documentation ---------------------


def test_config_file_with_values_inlined() -> None:
    template = (
        "datasources:\n- name: Graphite\n  type: graphite\n  access: proxy\n"
        '  url: http://localhost:8080\n  password: "{{ .password }}"\n  user: "{{ .user }}"\n'
    )
    out = r(template, {"password": "pw", "user": "admin"})
    assert yaml.safe_load(out)["datasources"][0] == {
        "name": "Graphite", "type": "graphite", "access": "proxy",
        "url": "http://localhost:8080", "password": "pw", "user": "admin",
    }


def test_replace_rewrites_a_connection_string() -> None:
    template = '{{ .dburl | replace "postgres://" "postgresql://" }}'
    assert r(template, {"dburl": "postgres://db:5432/app"}) == "postgresql://db:5432/app"


def test_dockerconfigjson_built_with_dict_tojson_and_b64enc() -> None:
    template = (
        '{{ $auth := printf "%s:%s" .user .password | b64enc }}'
        '{{ dict "auths" (dict .registry (dict "username" .user "password" .password '
        '"auth" $auth)) | toJson }}'
    )
    data = {"registry": "registry.cn-hangzhou.aliyuncs.com", "user": "u", "password": "p<&>"}
    out = r(template, data)
    assert out == (
        '{"auths":{"registry.cn-hangzhou.aliyuncs.com":{"auth":"dTpwPCY+",'
        '"password":"p\\u003c\\u0026\\u003e","username":"u"}}}'
    )
    assert json.loads(out)["auths"][data["registry"]]["password"] == "p<&>"


def test_dockerconfigjson_written_as_text() -> None:
    template = '{"auths":{"{{ .host }}":{"auth":"{{ printf "%s:%s" .u .p | b64enc }}"}}}'
    out = r(template, {"host": "r.example", "u": "a", "p": "b"})
    assert json.loads(out) == {"auths": {"r.example": {"auth": base64.b64encode(b"a:b").decode()}}}


PEM_CERT = "-----BEGIN CERTIFICATE-----\nQ0VSVA==\n-----END CERTIFICATE-----\n"
PEM_CHAIN = "-----BEGIN CERTIFICATE-----\nQ0hBSU4=\n-----END CERTIFICATE-----\n"
PEM_KEY = "-----BEGIN PRIVATE KEY-----\nS0VZ\n-----END PRIVATE KEY-----\n"


def test_tls_pair_from_one_bundle_with_filter_pem() -> None:
    bundle = PEM_KEY + PEM_CERT + PEM_CHAIN
    data = {"bundle": bundle}
    assert r('{{ .bundle | filterPEM "PRIVATE KEY" }}', data) == PEM_KEY
    assert r('{{ .bundle | filterPEM "CERTIFICATE" }}', data) == PEM_CERT + PEM_CHAIN


def test_tls_pair_from_json_secret() -> None:
    secret = json.dumps({"crt": PEM_CERT, "key": PEM_KEY})
    assert r("{{ (fromJson .tls).crt }}", {"tls": secret}) == PEM_CERT
    assert r('{{ index (fromJson .tls) "key" | b64enc }}', {"tls": secret}) == (
        base64.b64encode(PEM_KEY.encode()).decode()
    )


def test_keys_with_dashes_are_read_with_index() -> None:
    assert r('{{ index . "service-account-token" }}', {"service-account-token": "t"}) == "t"


def test_helm_escaped_template_renders_the_inner_template_text() -> None:
    assert r("{{ `{{ .mysecret }}` }}") == "{{ .mysecret }}"


def test_ack_style_key_value_listing_over_all_data() -> None:
    template = "{{- range $k, $v := . }}\n{{ $k }}={{ $v }}\n{{- end }}"
    assert r(template, {"b": "2", "a": "1"}) == "\na=1\nb=2"


def test_ack_functions() -> None:
    doc = '{"db": {"hosts": ["h1", "h2"], "port": 5432}}'
    assert r('{{ jsonPath .c "db.hosts.1" }}', {"c": doc}) == "h2"
    assert r('{{ jsonPath .c "db.port" }}', {"c": doc}) == "5432"
    assert r('{{ jsonPath .c "db.nope" }}|{{ jsonPath "not json" "a" }}', {"c": doc}) == "|"
    assert r('{{ mergeJson .c `{"db": {"port": 6432, "ssl": true}}` }}', {"c": doc}) == (
        '{"db":{"hosts":["h1","h2"],"port":6432,"ssl":true}}'
    )
    assert r('{{ mergeJson "[1]" "{}" }}') == "[1]"
    kv = "{{ $m := parseKeyValue .env }}{{ $m.A }},{{ $m.B }}"
    assert r(kv, {"env": "# comment\n A = 1 \n\nB=x=y\nnoequals\n"}) == "1,x=y"
    assert r('{{ toLines .t | join "," }}', {"t": " a\nb \n"}) == "a,b"
    assert r('{{ toLines "" | len }}') == "0"


def test_missing_key_is_an_error_by_default_and_no_value_in_ack_mode() -> None:
    error = err("{{ .password }}", {})
    assert "map has no entry for key 'password'" in error.message
    assert r("{{ .password }}", {}, missing_key="default") == "<no value>"
    assert r("{{ .a.b }}", {}, missing_key="default") == "<no value>"
    assert r('{{ index . "x" }}', {}, missing_key="default") == "<no value>"
    assert r('{{ index . "x" }}', {}) == ""  # ESO's map[string]string
    with pytest.raises(ValueError, match="missing_key"):
        parse("x", NAME).execute({}, missing_key="zero")  # type: ignore[arg-type]


# ---- lexical rules -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("a  {{- 1 -}}  b", "a1b"),
        ("a \n\t{{- 1 }} b", "a1 b"),
        ("a {{ 1 -}} \n b", "a 1b"),
        ("a {{-3}} b", "a -3 b"),  # no space: a negative number, not a trim marker
        ("a {{/* comment */}} b", "a  b"),
        ("a {{- /* comment */ -}} b", "ab"),
        ("{{/* multi\nline */}}x", "x"),
        ('{{ "a\\tb\\n\\"q\\"\\x41\\u00e9\\101" }}', 'a\tb\n"q"Aé' + "A"),
        ("{{ `raw \\n {{ }}` }}", "raw \\n {{ }}"),
        ("{{ 'a' }} {{ '\\n' }}", "97 10"),
        ("{{ 42 }} {{ -7 }} {{ 0x1F }} {{ 0o17 }} {{ 017 }} {{ 0b101 }} {{ 1_000 }}",
         "42 -7 31 15 15 5 1000"),
        ("{{ 1.5 }} {{ 1e3 }} {{ 1e6 }} {{ .5 }} {{ 0x1p-2 }}", "1.5 1000 1e+06 0.5 0.25"),
        ("{{ true }} {{ false }}", "true false"),
        ("{{\n.a\n}}", "A"),
        ("plain }} text", "plain }} text"),
    ],
)
def test_lexical_rules(template: str, expected: str) -> None:
    assert r(template, {"a": "A"}) == expected


# ---- values and printing -----------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ print 1 2 }}|{{ print \"a\" \"b\" }}|{{ print 1 \"a\" 2 }}", "1 2|ab|1a2"),
        ("{{ println \"a\" 1 }}", "a 1\n"),
        ("{{ list 1 nil \"a\" (list 2) }}", "[1 <nil> a [2]]"),
        ('{{ dict "b" 1 "a" "x" }}', "map[a:x b:1]"),
        ("{{ print nil }}", "<nil>"),
        ('{{ index (dict "a" nil) "a" }}', "<no value>"),
        ('{{ (fromJson "{\\"n\\": 100000}").n }} {{ (fromJson "{\\"n\\": 1000000}").n }}',
         "100000 1e+06"),
        ('{{ (fromJson "[0.1, 1.5e-7, 123456789.5, -0.0001]") }}',
         "[0.1 1.5e-07 1.234567895e+08 -0.0001]"),
        ('{{ fromJson "[1, 2]" | toJson }}', "[1,2]"),
        ('{{ float64 "1e21" | toJson }} {{ float64 "1e-7" | toJson }} {{ float64 "0.5" | toJson }}',
         "1e+21 1e-7 0.5"),
    ],
)
def test_printing_follows_fmt(template: str, expected: str) -> None:
    assert r(template) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ('{{ printf "%s|%v|%q" "a" "b" "c\\"d" }}', 'a|b|"c\\"d"'),
        ('{{ printf "%d|%5d|%-5d|%05d|%+d|%x|%X|%o|%b|%#x" 42 42 42 42 42 255 255 8 5 255 }}',
         "42|   42|42   |00042|+42|ff|FF|10|101|0xff"),
        ('{{ printf "%.2f|%6.2f|%e|%g|%g|%v" 3.14159 3.14159 1234.5678 0.000012345 1e21 2.5 }}',
         "3.14|  3.14|1.234568e+03|1.2345e-05|1e+21|2.5"),
        ('{{ printf "%t %c %U %%" true 65 65 }}', "true A U+0041 %"),
        ('{{ printf "%s" (list "a" "b") }}', "[a b]"),
        ('{{ printf "%x" "hi" }}|{{ printf "%q" 65 }}|{{ printf "%.3s" "abcdef" }}',
         "6869|'A'|abc"),
        ('{{ printf "%*d" 4 7 }}', "   7"),
        ('{{ printf "%q" "tab\\there\\u0001" }}', '"tab\\there\\x01"'),
        ('{{ printf "%v %v" true nil }}', "true <nil>"),
    ],
)
def test_printf_formats(template: str, expected: str) -> None:
    assert r(template) == expected


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ('{{ printf "%d" "x" }}', "%d needs an int, got string"),
        ('{{ printf "%f" 1 }}', "%f needs a float, got int"),
        ('{{ printf "%s %s" "x" }}', "needs more arguments"),
        ('{{ printf "%s" "x" "y" }}', "more arguments than the format uses"),
        ('{{ printf "%z" 1 }}', "verb %z is not supported"),
    ],
)
def test_printf_mismatches_are_errors(template: str, message: str) -> None:
    assert message in err(template).message


# ---- control structures ------------------------------------------------------------


@pytest.mark.parametrize(
    "falsy", ['""', "0", "0.0", "false", '(index (dict) "x")', "(list)", "(dict)"]
)
def test_empty_values_are_false(falsy: str) -> None:
    assert r(f"{{{{ if {falsy} }}}}T{{{{ else }}}}F{{{{ end }}}}") == "F"
    assert r(f"{{{{ with {falsy} }}}}T{{{{ else }}}}F{{{{ end }}}}") == "F"


@pytest.mark.parametrize("truthy", ['"0"', '" "', "1", "-1", "0.5", "true", "(list 0)",
                                    '(dict "a" 0)'])
def test_non_empty_values_are_true(truthy: str) -> None:
    assert r(f"{{{{ if {truthy} }}}}T{{{{ else }}}}F{{{{ end }}}}") == "T"


@pytest.mark.parametrize(
    ("value", "expected"), [("a", "A"), ("b", "B"), ("c", "C"), ("z", "other")]
)
def test_if_else_if_chain(value: str, expected: str) -> None:
    template = (
        '{{ if eq .v "a" }}A{{ else if eq .v "b" }}B{{ else if eq .v "c" }}C'
        "{{ else }}other{{ end }}"
    )
    assert r(template, {"v": value}) == expected


def test_with_sets_dot_and_else_with_chains() -> None:
    assert r("{{ with .a }}<{{ . }}>{{ end }}", {"a": "x"}) == "<x>"
    assert r("{{ with .a }}<{{ . }}>{{ else with .b }}[{{ . }}]{{ end }}",
             {"a": "", "b": "y"}) == "[y]"
    assert r("{{ with $x := .a }}{{ $x }}{{ $ | len }}{{ end }}", {"a": "x"}) == "x1"


def test_range_over_lists_maps_and_ints() -> None:
    assert r('{{ range list "x" "y" }}{{ . }}{{ end }}') == "xy"
    assert r('{{ range $i, $v := list "x" "y" }}{{ $i }}{{ $v }};{{ end }}') == "0x;1y;"
    assert r('{{ range $v := list "x" "y" }}{{ $v }}{{ end }}') == "xy"
    assert r('{{ range $k, $v := dict "b" 2 "a" 1 "C" 3 }}{{ $k }}{{ $v }}{{ end }}') == "C3a1b2"
    assert r("{{ range $i := 3 }}{{ $i }}{{ end }}") == "012"
    assert r("{{ range list }}x{{ else }}empty{{ end }}") == "empty"
    assert r('{{ range (index (dict) "k") }}x{{ else }}nil{{ end }}') == "nil"


def test_range_over_a_string_is_an_error() -> None:
    assert "range can't iterate over a string" in err("{{ range .a }}{{ end }}", {"a": "x"}).message


def test_break_and_continue() -> None:
    template = (
        "{{ range $i := 6 }}{{ if eq $i 1 }}{{ continue }}{{ end }}"
        "{{ if eq $i 4 }}{{ break }}{{ end }}{{ $i }}{{ end }}"
    )
    assert r(template) == "023"
    assert "outside {{range}}" in err("{{ break }}").message


def test_variables_scope_and_assignment() -> None:
    assert r('{{ $x := "a" }}{{ range list 1 2 }}{{ $x = print $x . }}{{ end }}{{ $x }}') == "a12"
    assert r("{{ $x := 1 }}{{ if true }}{{ $x := 2 }}{{ $x }}{{ end }}{{ $x }}") == "21"
    assert "undefined variable $y" in err("{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}").message
    assert "undefined variable $z" in err("{{ $z = 1 }}").message
    assert r("{{ range list 1 }}{{ $.a }}{{ end }}", {"a": "root"}) == "root"


def test_define_template_and_block() -> None:
    template = '{{ define "t" }}[{{ . }}]{{ end }}{{ template "t" "x" }}{{ template "t" }}'
    assert r(template) == "[x][<no value>]"
    assert r('{{ block "b" .a }}({{ . }}){{ end }}', {"a": "v"}) == "(v)"
    assert parse('{{ define "a" }}{{ end }}{{ define "b" }}{{ end }}', NAME).defined_templates == {
        "a", "b"}
    assert "no such template 'nope'" in err('{{ template "nope" }}').message
    assert "defined twice" in err('{{ define "a" }}{{ end }}{{ define "a" }}{{ end }}').message
    assert "only allowed at the top level" in err('{{ if 1 }}{{ define "a" }}{{ end }}{{ end }}'
                                                  ).message


def test_parenthesised_pipelines_and_chains() -> None:
    assert r('{{ len (print "a" "b") }}') == "2"
    assert r("{{ (fromJson .j).a.b }}", {"j": '{"a": {"b": "deep"}}'}) == "deep"
    assert r('{{ $m := fromJson .j }}{{ $m.a.b }}', {"j": '{"a": {"b": 1}}'}) == "1"


def test_and_or_return_deciding_value_and_short_circuit() -> None:
    assert r('{{ and 1 0 2 }}|{{ and 1 2 }}|{{ or 0 "" "z" }}|{{ or 0 false }}') == (
        "0|2|z|false"
    )
    assert r("{{ and 0 (index nil 1) }}|{{ or 1 (index nil 1) }}") == "0|1"
    assert r("{{ 0 | or 5 }}") == "5"
    assert r("{{ not 0 }}|{{ not \"x\" }}") == "true|false"


def test_comparisons_follow_go_rules() -> None:
    assert r('{{ eq "a" "a" }} {{ eq 1 2 3 1 }} {{ ne 1 2 }} {{ lt 1 2 }} {{ le 2 2 }}') == (
        "true true true true true")
    assert r('{{ gt "b" "a" }} {{ ge 1.5 2.5 }} {{ eq nil nil }} {{ eq .a nil }}',
             {"a": "x"}) == "true false true false"
    assert "incompatible types for comparison" in err("{{ eq 1 1.0 }}").message
    assert "incompatible types for comparison" in err('{{ eq "1" 1 }}').message
    assert "invalid type for comparison" in err("{{ lt true false }}").message
    assert "non-comparable" in err("{{ eq (list) (list) }}").message


# ---- sprig and Go builtin functions ------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ('{{ "Hello" | upper }}|{{ "Hello" | lower }}|{{ title "hello wide-world_x" }}',
         "HELLO|hello|Hello Wide-World_x"),
        ('{{ trim "  x \\n" }}|{{ trimAll "$" "$5.00$" }}|{{ trimPrefix "-" "--x" }}'
         '|{{ trimSuffix ".com" "a.com" }}', "x|5.00|-x|a"),
        ('{{ nospace " a b\\tc " }}|{{ repeat 3 "ab" }}|{{ substr 1 3 "hello" }}'
         '|{{ trunc 2 "hello" }}|{{ trunc -2 "hello" }}', "abc|ababab|el|he|lo"),
        ('{{ contains "ell" "hello" }} {{ hasPrefix "he" "hello" }} {{ hasSuffix "x" "hello" }}',
         "true true false"),
        ('{{ quote "a" 1 nil }}|{{ squote "a" }}|{{ cat "a" 1 nil "b" }}', "\"a\" \"1\"|'a'|a 1 b"),
        ('{{ "a\\nb" | indent 2 }}|{{ "a" | nindent 2 }}', "  a\n  b|\n  a"),
        ('{{ toString 1.5 }}|{{ toString nil }}|{{ toStrings (list 1 "a") }}', "1.5|<nil>|[1 a]"),
        ('{{ $s := split "," "a,b" }}{{ $s._1 }}|{{ splitList "," "a,b" }}'
         '|{{ splitn "," 2 "a,b,c" }}',
         "b|[a b]|map[_0:a _1:b,c]"),
        ('{{ join "-" (list "a" 1 nil) }}|{{ sortAlpha (list "b" "a" "C") }}', "a-1|[C a b]"),
        ('{{ "hi" | b64enc }}|{{ "aGk=" | b64dec }}|{{ "hi" | b32enc }}|{{ "NBUQ====" | b32dec }}',
         "aGk=|hi|NBUQ====|hi"),
        ('{{ toJson (list "<" 1.5 true nil) }}|{{ toRawJson (list "<") }}',
         '["\\u003c",1.5,true,null]|["<"]'),
        ('{{ toPrettyJson (dict "a" (list 1)) }}', '{\n  "a": [\n    1\n  ]\n}'),
        ('{{ (fromYaml "a: [1, x]\\nb: yes\\nc: 2001-12-14") | toJson }}',
         '{"a":[1,"x"],"b":true,"c":"2001-12-14"}'),
        ('{{ sha256sum "a" | trunc 8 }}|{{ sha1sum "a" | trunc 8 }}|{{ adler32sum "a" }}',
         "ca978112|86f7e437|6422626"),
        ('{{ default "d" "" }}|{{ default "d" "x" }}|{{ "" | default "d" }}|{{ default "d" }}',
         "d|x|d|d"),
        ('{{ empty "" }} {{ empty 0 }} {{ empty (list) }} {{ empty "a" }}', "true true true false"),
        ('{{ coalesce "" 0 "x" }}|{{ ternary "y" "n" true }}|{{ all 1 "a" }}|{{ any 0 "" }}',
         "x|y|true|false"),
        ('{{ $l := list 1 2 3 }}{{ first $l }}{{ last $l }}{{ rest $l }}{{ initial $l }}',
         "13[2 3][1 2]"),
        ('{{ append (list 1) 2 }}{{ prepend (list 1) 0 }}{{ concat (list 1) (list 2) }}'
         '{{ reverse (list 1 2) }}', "[1 2][0 1][1 2][2 1]"),
        ('{{ has 2 (list 1 2) }} {{ has "2" (list 1 2) }} {{ uniq (list 1 1 "1") }}'
         ' {{ without (list 1 2 3) 2 }} {{ compact (list 0 1 "" "a") }}',
         "true false [1 1] [1 3] [1 a]"),
        ('{{ $d := dict "a" 1 "b" 2 }}{{ get $d "a" }}|{{ get $d "z" }}|{{ hasKey $d "b" }}'
         '|{{ keys $d }}|{{ values $d }}|{{ pick $d "a" }}|{{ omit $d "a" }}',
         "1||true|[a b]|[1 2]|map[a:1]|map[b:2]"),
        ('{{ $d := dict }}{{ $_ := set $d "k" "v" }}{{ $d.k }}{{ unset $d "k" }}', "vmap[]"),
        ('{{ dig "a" "b" "dflt" (dict "a" (dict "b" 1)) }}|{{ dig "a" "x" "dflt" (dict) }}',
         "1|dflt"),
        ('{{ add 1 2 "3" }} {{ add1 1 }} {{ sub 5 7 }} {{ mul 2 3 4 }} {{ div 7 2 }} '
         '{{ div -7 2 }} {{ mod -7 2 }} {{ max 1 5 2 }} {{ min 3 1 }}',
         "6 2 -2 24 3 -3 -1 5 1"),
        ('{{ int "42" }} {{ int "4.0" }} {{ int "x" }} {{ int 3.9 }} {{ atoi "12" }} '
         '{{ float64 "1.5" }} {{ int64 "0x10" }}', "42 4 0 3 12 1.5 16"),
        ('{{ mul 9223372036854775807 2 }}', "-2"),
        ('{{ len "héllo" }} {{ len (list 1 2) }} {{ len (dict "a" 1) }}', "6 2 1"),
        ('{{ index (list 1 (list 2 3)) 1 0 }}|{{ index "abc" 1 }}|{{ slice "hello" 1 3 }}'
         '|{{ slice (list 1 2 3) 1 }}', "2|98|el|[2 3]"),
        ('{{ html "<a href=\'x\'>&" }}|{{ urlquery "a b&c/d~" }}',
         "&lt;a href=&#39;x&#39;&gt;&amp;|a+b%26c%2Fd~"),
        ('{{ required "needed" "x" }}', "x"),
    ],
)
def test_functions(template: str, expected: str) -> None:
    assert r(template) == expected


def test_to_yaml_uses_go_key_order_and_quoting() -> None:
    doc = json.dumps({"key10": 1, "key2": "yes", "key1": "multi\nline", "b": {"x": [1.5, None]},
                      "_a": "123", "n": 1000000})
    assert r("{{ fromJson .d | toYaml }}", {"d": doc}) == (
        '_a: "123"\nb:\n  x:\n  - 1.5\n  - null\nkey1: |-\n  multi\n  line\nkey2: "yes"\n'
        "key10: 1\nn: 1000000"
    )
    assert r('{{ toYaml "plain" }}') == "plain"


def test_supported_functions_cover_the_documented_set() -> None:
    documented = (
        "b64enc b64dec toJson fromJson mustFromJson toYaml fromYaml upper lower title trim "
        "trimPrefix trimSuffix replace quote squote default required empty contains hasPrefix "
        "hasSuffix split splitList join list dict get hasKey keys nindent indent toString int "
        "add sub index len and or not eq ne lt le gt ge print printf println"
    )
    wanted = set(documented.split(" "))
    assert wanted <= SUPPORTED_FUNCTIONS
    assert not SUPPORTED_FUNCTIONS & set(UNSUPPORTED_FUNCTIONS)


@pytest.mark.parametrize("name", ["env", "now", "randAlphaNum", "regexMatch", "pkcs12key",
                                  "bcrypt", "genPrivateKey"])
def test_unsupported_functions_are_parse_errors_with_a_reason(name: str) -> None:
    error = err(f'{{{{ {name} "x" }}}}')
    assert f"function {name!r} is not supported: " in error.message
    assert (error.line, error.column) == (1, 4)


def test_binary_values_survive_b64dec_as_exact_bytes() -> None:
    raw = bytes(range(256))
    out = r("{{ .der | b64dec }}", {"der": base64.b64encode(raw).decode()})
    assert encode_output(out) == raw
    assert r("{{ .bin | b64enc }}", {"bin": raw}) == base64.b64encode(raw).decode()
    assert r("{{ len .bin }}", {"bin": raw}) == "256"


def test_lone_surrogates_become_replacement_characters() -> None:
    out = r("{{ fromJson .j | b64enc }}|{{ .s | b64enc }}|\ud800", {"j": '"\\ud800"',
                                                                     "s": "\ud801"})
    assert out == "77+9|77+9|\ufffd"


# ---- errors: name, position, never a value -----------------------------------------


def test_error_names_template_line_and_column() -> None:
    error = err("line one\n  {{ .missing }}", {"other": MARKER})
    assert (error.name, error.line, error.column) == (NAME, 2, 6)
    assert str(error) == f"{NAME}:2:6: map has no entry for key 'missing'"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ .a", "unclosed action"),
        ("{{ if true }}x", "missing {{end}}"),
        ("{{ end }}", "unexpected {{end}}"),
        ("{{ else }}", "unexpected {{else}}"),
        ("{{ nope 1 }}", "function 'nope' not defined"),
        ("{{ $z }}", "undefined variable $z"),
        ('{{ "x" 1 }}', "can't give argument to non-function"),
        ('{{ .a | "x" }}', "pipeline stage 2 must call a function"),
        ("{{ }}", "missing value for command"),
        ("{{ .a | }}", "missing command after |"),
        ('{{ "abc }}', "unterminated quoted string"),
        ("{{ `abc }}", "unterminated raw quoted string"),
        ("{{ /* c */ }}", "unexpected character '/'"),
        ("{{/* c */ x}}", "comment ends before closing delimiter"),
        ("{{/* c", "unclosed comment"),
        ("{{ 1x }}", "bad number syntax"),
        ("{{ 99999999999999999999 }}", "number out of range"),
        ("{{ 1i }}", "complex numbers are not supported"),
        ('{{ "\\q" }}', "invalid escape"),
        ("{{ 'ab' }}", "malformed character constant"),
        ("{{ template .a }}", "needs a quoted template name"),
        ("{{ nil }}", "nil is not a command"),
        ("{{ len }}", "wrong number of args for len: want 1, got 0"),
        ("{{ .a 1 }}", "can't give argument to non-function"),
        ("{{ range $i, $v, $w := . }}{{ end }}", "expected := or = after range variables"),
        ("{{ if }}{{ end }}", "missing value for if"),
        ("{{ 1 | printf }}", "error calling printf"),
        ('{{ fail "custom stop" }}', "fail: custom stop"),
    ],
)
def test_errors(template: str, message: str) -> None:
    error = err(template, {"a": MARKER})
    assert message in error.message
    assert error.name == NAME and error.line >= 1 and error.column >= 1


@pytest.mark.parametrize(
    "template",
    [
        "{{ .s.field }}",
        "{{ index .s 99 }}",
        "{{ index . .s }}x{{ .nope }}",
        "{{ .s | b64dec }}",
        "{{ .s | b32dec }}",
        "{{ fromJson .s }}",
        "{{ fromYaml .y }}",
        "{{ eq .s 1 }}",
        "{{ lt .s (list) }}",
        '{{ printf "%d" .s }}',
        '{{ printf .s }}',
        "{{ range .s }}{{ end }}",
        "{{ required (print .s) \"\" }}",
        '{{ required "" .empty }}',
        "{{ fail .s }}",
        "{{ len 3 }}{{ .s }}",
        "{{ index (fromJson .j) .s }}{{ .s.x }}",
        "{{ div 1 (int .zero) }}",
        "{{ repeat 100000000 .s }}",
        "{{ toJson (dict .s (dict .s (dict .s 1))) | len | printf \"%s\" }}",
        "{{ slice .s 3 1 }}",
        "{{ template \"x\" .s }}",
    ],
)
def test_errors_never_contain_a_value(template: str) -> None:
    data = {"s": f"{MARKER} %d %s", "y": f"a: b: {MARKER}: [", "j": '{"k": 1}', "zero": "0",
            "empty": ""}
    error = err(template, data)
    assert MARKER not in str(error)
    assert MARKER not in repr(error.args)


# ---- bounds ------------------------------------------------------------------------


def test_output_bound() -> None:
    limits = Limits(max_output_bytes=100)
    assert len(r("{{ range 10 }}0123456789{{ end }}", limits=limits)) == 100
    error = err("{{ range 11 }}0123456789{{ end }}", limits=limits)
    assert "output larger than 100 bytes" in error.message


def test_intermediate_values_are_bounded_by_the_output_bound() -> None:
    limits = Limits(max_output_bytes=1000)
    assert "result larger than 1000 bytes" in err('{{ $x := repeat 1001 "a" }}', limits=limits
                                                  ).message
    doubling = '{{ $s := "ab" }}{{ range 20 }}{{ $s = printf "%s%s" $s $s }}{{ end }}'
    assert "larger than 1000 bytes" in err(doubling, limits=limits).message
    assert "width or precision above" in err('{{ printf "%99999d" 1 }}', limits=limits).message
    assert "larger than" in err('{{ indent 2000 "a" }}', limits=limits).message
    assert "larger than" in err('{{ replace "a" (repeat 999 "b") "aaa" }}', limits=limits).message


def test_step_bound() -> None:
    assert r("{{ range 100 }}{{ end }}x", limits=Limits(max_steps=1000)) == "x"
    error = err("{{ range 10000 }}{{ end }}", limits=Limits(max_steps=1000))
    assert "evaluation exceeded 1000 steps" in error.message


def test_big_strings_cost_steps() -> None:
    template = '{{ $s := repeat 500000 "a" }}{{ range 1000 }}{{ $x := upper $s }}{{ end }}'
    assert "exceeded" in err(template, limits=Limits(max_steps=100_000)).message


def test_range_iteration_bound() -> None:
    limits = Limits(max_range_iterations=20)
    assert r("{{ range 4 }}{{ range 4 }}.{{ end }}{{ end }}", limits=limits) == "." * 16
    error = err("{{ range 5 }}{{ range 5 }}{{ end }}{{ end }}", limits=limits)
    assert "range exceeded 20 iterations" in error.message
    assert "range exceeded" in err("{{ range 1000000000 }}{{ end }}", limits=limits).message


def test_depth_bounds() -> None:
    recursive = '{{ define "r" }}{{ template "r" . }}{{ end }}{{ template "r" }}'
    assert "nesting deeper than 10 levels" in err(recursive, limits=Limits(max_depth=10)).message
    assert "nesting deeper than" in err(recursive).message
    nested_ifs = "{{ if 1 }}" * 100 + "{{ end }}" * 100
    assert "nesting deeper than 64 levels" in err(nested_ifs).message
    assert "nesting deeper than" in err("{{ " + "(" * 100 + "1" + ")" * 100 + " }}").message
    deep_value = '{{ $d := dict }}{{ range 100 }}{{ $d = dict "a" $d }}{{ end }}{{ toJson $d }}'
    assert "nested too deeply" in err(deep_value).message
    assert "nested too deeply" in err(deep_value.replace("toJson $d", "$d")).message
    assert "not valid JSON" in err("{{ fromJson .j }}", {"j": "[" * 100_000}).message
    assert "nested too deeply" in err("{{ fromJson .j }}",
                                      {"j": "[" * 200 + "]" * 200}).message
    # a recursive anchor is refused before any object is built
    assert "not valid YAML" in err("{{ fromYaml .y }}", {"y": "a: &a [*a]"}).message


def test_yaml_alias_expansion_is_bounded() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for level in "bcdefgh":
        previous = chr(ord(level) - 1)
        bomb += f"{level}: &{level} [" + ", ".join([f"*{previous}"] * 10) + "]\n"
    assert "exceeded" in err("{{ fromYaml .y | toJson }}", {"y": bomb}).message


def test_a_parsed_template_is_reusable() -> None:
    template = parse("{{ .a | upper }}", NAME)
    assert [template.execute({"a": v}) for v in ("x", "y")] == ["X", "Y"]
    assert template.name == NAME


# ---- properties --------------------------------------------------------------------

PROPERTY = settings(max_examples=150, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(st.text().filter(lambda t: "{{" not in t))
def test_text_without_actions_renders_to_itself(text: str) -> None:
    assert r(text) == text


@PROPERTY
@given(st.text())
def test_quote_output_is_a_go_literal_of_the_value(value: str) -> None:
    quoted = r("{{ quote .v }}", {"v": value})
    assert r("{{ " + quoted + " }}") == value


@PROPERTY
@given(st.text())
def test_to_json_from_json_round_trip(value: str) -> None:
    assert r("{{ toJson .v | fromJson }}", {"v": value}) == value
    assert json.loads(r("{{ toJson .v }}", {"v": value})) == value


@PROPERTY
@given(st.binary())
def test_b64_round_trip_on_bytes(value: bytes) -> None:
    assert encode_output(r("{{ .v | b64enc | b64dec }}", {"v": value})) == value


@PROPERTY
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_print_in_shortest_round_trip_form(value: float) -> None:
    assert float(r("{{ float64 .v }}", {"v": repr(value)})) == value
    assert float(r("{{ float64 .v | toJson }}", {"v": repr(value)})) == value


@PROPERTY
@given(st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1))
def test_printf_integers(value: int) -> None:
    assert r('{{ printf "%d %x" (int .v) (int .v) }}', {"v": str(value)}) == (
        f"{value} {'-' if value < 0 else ''}{abs(value):x}"
    )


@PROPERTY
@given(st.dictionaries(st.text(), st.text(), max_size=8))
def test_range_over_the_data_visits_keys_in_byte_order(data: dict[str, str]) -> None:
    template = "{{ $ks := list }}{{ range $k, $v := . }}{{ $ks = append $ks $k }}{{ end }}"
    assert json.loads(r(template + "{{ toJson $ks }}", data)) == sorted(data, key=str.encode)


@PROPERTY
@given(st.text(alphabet=st.characters(blacklist_categories=())), st.text(
    alphabet=st.characters(blacklist_categories=())))
def test_any_text_and_data_render_or_raise_template_error(text: str, value: str) -> None:
    try:
        out = r(text, {"a": value})
    except TemplateError as error:
        assert error.name == NAME
    else:
        assert isinstance(encode_output(out), bytes)
    assert isinstance(encode_output(r("{{ .a }}{{ .a | quote }}{{ .a | toJson }}", {"a": value})),
                      bytes)


_ATOMS = [
    "{{", "}}", "{{- ", " -}}", " ", ".", ".a", ".b.c", "$", "$x", "$x := ", "$x = ", "|", "(",
    ")", '"s"', "`r`", "'c'", "1", "-2", "3.5", "0x1F", "if ", "else ", "end", "range ",
    "with ", "define ", "template ", "block ", "break", "continue", "nil", "true", ",",
    "\n", "text", "/*", "*/", "index ", "printf ", "toJson ", "fromJson ", "fromYaml ",
    "repeat ", "list ", "dict ", "len ", "quote ", "b64dec ", "eq ", "and ", "or ",
    "required ", "split ", "add ", "mul ", "toYaml ", '"%d%s%v"', "10000",
]


@settings(max_examples=400, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_ATOMS), max_size=30), st.integers(min_value=0, max_value=300))
def test_any_template_renders_within_bounds_or_raises_template_error(
    atoms: list[str], max_bytes: int
) -> None:
    text = "".join(atoms)
    data = {"a": "1", "b": '{"c": [1, {"d": null}]}', "j": "[1,", "y": "a: &x [*x]"}
    limits = Limits(max_output_bytes=max_bytes, max_steps=2000, max_range_iterations=500)
    try:
        out = render(text, data, name=NAME, limits=limits)
    except TemplateError as error:
        assert error.name == NAME
        return
    assert len(encode_output(out)) <= max_bytes


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_pipeline_of_functions_renders_or_raises_template_error(data: st.DataObject) -> None:
    names = sorted(SUPPORTED_FUNCTIONS)
    values = ['"s"', "1", "-2", "2.5", "nil", "true", ".a", ".j", "$", "(list 1 \"x\")",
              '(dict "k" 1)', '""', '"%d %s"', '"a,b"', '"\\xff"']
    stages = data.draw(st.lists(
        st.tuples(st.sampled_from(names), st.lists(st.sampled_from(values), max_size=3)),
        min_size=1, max_size=4))
    text = "{{ " + " | ".join(f"{name} {' '.join(args)}" for name, args in stages) + " }}"
    try:
        out = render(text, {"a": "1", "j": '{"k": [1, 2]}'}, name=NAME,
                     limits=Limits(max_output_bytes=10_000, max_steps=5_000))
    except TemplateError as error:
        assert error.name == NAME
    else:
        assert isinstance(out, str)


# ---- the sync's budget: every operation reserves before it builds ---------------------

# The budget of these tests, and what a render may allocate beyond it: the interpreter's
# frames, exception objects and the regex and tracemalloc bookkeeping of one call. Measured
# over these cases at 256 KiB and 4 MiB budgets, peak minus reserved bytes was at most
# 3.3 KiB; 256 KiB leaves room for other Python builds. The inputs exist before the render
# and are not counted.
TEST_BUDGET = 4 << 20
OVERHEAD = 256 << 10
# Only the sync's budget bounds these renders: no per-template size or step bound.
UNBOUNDED = Limits(max_output_bytes=1 << 40, max_steps=10**12, max_range_iterations=10**9)


def _peak(call: Any) -> tuple[int, BaseException | None]:
    """Peak bytes allocated by ``call`` (tracemalloc), and what it raised."""
    gc.collect()
    tracemalloc.start()
    raised: BaseException | None = None
    try:
        call()
    except TemplateError as exc:
        raised = exc
    finally:
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, raised


def _bomb(levels: int) -> str:
    """The issue's YAML alias bomb: ten aliases of the previous level per level."""
    text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for level in "bcdefghijklmnop"[: levels]:
        previous = chr(ord(level) - 1)
        text += f"{level}: &{level} [" + ", ".join([f"*{previous}"] * 10) + "]\n"
    return text


# The hostile shapes: a few hundred characters that double a list or a string per
# iteration and then format every element (join, toStrings, sortAlpha, quote, cat, print,
# printf, toJson, toYaml), `split ""` over 1 MB, a range over a big map, an alias bomb.
HOSTILE: dict[str, tuple[str, dict[str, str]]] = {
    "concat-join": ('{{ $l := list .v }}{{ range 40 }}{{ $l = concat $l $l }}{{ end }}'
                    '{{ join "," $l }}', {"v": "x" * 1000}),
    "concat-toStrings-sortAlpha": ('{{ $l := list .v }}{{ range 40 }}{{ $l = concat $l $l $l }}'
                                   '{{ end }}{{ toStrings $l | sortAlpha | len }}', {"v": "x"}),
    "cat-doubling": ('{{ $s := .v }}{{ range 40 }}{{ $s = cat $s $s }}{{ end }}{{ $s }}',
                     {"v": "x" * 100}),
    "printf-doubling": ('{{ $s := .v }}{{ range 40 }}{{ $s = printf "%s%s" $s $s }}{{ end }}'
                        '{{ $s }}', {"v": "x" * 100}),
    "print-nested-lists": ('{{ $l := list .v }}{{ range 40 }}{{ $l = list $l $l }}{{ end }}'
                           '{{ print $l }}', {"v": "x" * 100}),
    "quote-list": ('{{ $l := list .v }}{{ range 30 }}{{ $l = concat $l $l }}{{ end }}'
                   '{{ quote $l }}', {"v": "\u4e2d" * 100}),
    "println-squote": ('{{ $l := list .v }}{{ range 30 }}{{ $l = concat $l $l }}{{ end }}'
                       '{{ println (squote $l) }}', {"v": "x" * 100}),
    "toJson-nested": ('{{ $l := list .v }}{{ range 30 }}{{ $l = list $l $l }}{{ end }}'
                      '{{ toJson $l }}', {"v": "x" * 100}),
    "toYaml-nested": ('{{ $l := list .v }}{{ range 30 }}{{ $l = list $l $l }}{{ end }}'
                      '{{ toYaml $l }}', {"v": "x" * 10}),
    "repeat": ('{{ repeat 100000000 .v }}', {"v": "x" * 100}),
    "split-empty-1MB": ('{{ split "" .v | len }}', {"v": "x" * (1 << 20)}),
    "splitList-empty-wide": ('{{ splitList "" .v | len }}', {"v": "\u00e9\u4e2d" * (1 << 19)}),
    "range-over-doubled": ('{{ $l := list .v }}{{ range 40 }}{{ $l = concat $l $l }}{{ end }}'
                           '{{ range $l }}{{ . }}{{ end }}', {"v": "x" * 100}),
    "map-of-many-keys": ('{{ $d := dict }}{{ range $i, $e := (repeat 100000 "x" | splitList "") }}'
                         '{{ $_ := set $d (printf "%d" $i) $e }}{{ end }}{{ keys $d | len }}', {}),
    "b64enc-doubling": ('{{ $s := .v }}{{ range 40 }}{{ $s = b64enc (cat $s $s) }}{{ end }}',
                        {"v": "x" * 100}),
    "fromYaml-alias-bomb": ("{{ fromYaml .y | toJson }}", {"y": _bomb(8)}),
    "dense-1MiB-template": ("{{.a}}" * 180_000, {"a": "x"}),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_the_sync_budget_refuses_hostile_templates_before_allocating(name: str) -> None:
    text, data = HOSTILE[name]
    budget = SyncBudget(TEST_BUDGET, 10**12)
    peak, raised = _peak(lambda: render(text, data, name=NAME, limits=UNBOUNDED,
                                        budget=budget))
    assert isinstance(raised, TemplateError), f"{name} was not refused"
    assert raised.budget is not None and raised.budget.resource == "bytes", raised.message
    assert "--sync-budget-bytes" in raised.message
    assert peak <= TEST_BUDGET + OVERHEAD, f"{name}: peak {peak} bytes"
    assert budget.bytes <= TEST_BUDGET


def test_the_steps_of_every_template_of_a_sync_add_up() -> None:
    budget = SyncBudget(64 << 20, 8_000)
    loop = "{{ range 1000 }}{{ . }}{{ end }}"
    render(loop, {}, name="first", budget=budget)  # about 5,000 steps
    with pytest.raises(TemplateError) as info:
        render(loop, {}, name="second", budget=budget)
    assert info.value.budget is not None and info.value.budget.resource == "steps"
    assert "--sync-budget-steps" in info.value.message and info.value.name == "second"


def test_the_bytes_of_every_template_of_a_sync_add_up() -> None:
    budget = SyncBudget(3 << 20, 10**9)
    big = "{{ repeat 400000 .v }}"  # 800 kB: reserved once made, once written
    render(big, {"v": "ab"}, name="first", budget=budget)
    with pytest.raises(TemplateError) as info:
        render(big, {"v": "ab"}, name="second", budget=budget)
    assert info.value.budget is not None and info.value.name == "second"


def test_ordinary_templates_fit_the_default_budget_with_room() -> None:
    budget = SyncBudget()
    data = {"user": "app", "password": MARKER, "doc": json.dumps({"a": [1, 2, 3], "b": "x"})}
    out = render('{{ printf "%s:%s" .user .password | b64enc }} {{ (.doc | fromJson).b }} '
                 '{{ range $k, $v := . }}{{ $k }}={{ $v | quote }};{{ end }}{{ .doc | fromJson '
                 '| toYaml | indent 2 }}', data, name=NAME, budget=budget)
    assert out.startswith(base64.b64encode(f"app:{MARKER}".encode()).decode())
    assert budget.bytes < budget.max_bytes // 100 and budget.steps < budget.max_steps // 100


def test_a_parsed_template_is_cached_and_its_cost_charged_on_every_use() -> None:
    text = "{{ .a }}-" * 500
    first, second = SyncBudget(), SyncBudget()
    template = parse(text, "cached", first)
    started = time.process_time()
    again = parse(text, "cached", second)
    assert again is template  # parsed once
    assert time.process_time() - started < 0.05
    assert (first.bytes, first.steps) == (second.bytes, second.steps) and first.bytes > 0
    assert parse(text + " ", "cached", SyncBudget()) is not template  # another content


def test_parsing_is_charged_per_token_before_the_token_is_made() -> None:
    budget = SyncBudget(1 << 20, 10**9)
    peak, raised = _peak(lambda: parse("{{ list 1 2 3 4 5 6 7 8 9 }}" * 20_000, "dense", budget))
    assert isinstance(raised, TemplateError) and raised.budget is not None
    assert peak <= (1 << 20) + OVERHEAD


def test_range_over_a_map_the_body_changes() -> None:
    text = ('{{ $d := dict "a" 1 "b" 2 "c" 3 }}{{ range $k, $v := $d }}{{ $k }}'
            '{{ $_ := unset $d "b" }}{{ end }}')
    assert r(text) == "ac"


def test_a_heavy_render_pauses_for_other_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """A render that spends its budget releases the interpreter lock every PACE_STEPS steps
    (or PACE_BYTES bytes); an ordinary one never pauses."""
    from controller.gotemplate import _base

    pauses: list[float] = []
    monkeypatch.setattr(_base.time, "sleep", pauses.append)
    render("{{ .db }}-{{ upper .db }}", {"db": "pw"}, name="small", budget=SyncBudget())
    assert pauses == []
    budget = SyncBudget()
    with pytest.raises(TemplateError, match="budget"):
        render('{{ $l := list .db }}{{ range 40 }}{{ $l = concat $l $l }}{{ end }}'
               '{{ toStrings $l | sortAlpha | join "," }}', {"db": "pw"}, name="heavy",
               budget=budget)
    # At most one pause per PACE_STEPS or PACE_BYTES spent (one charge may cover several).
    most = budget.steps // _base.PACE_STEPS + budget.bytes // _base.PACE_BYTES
    assert 10 < len(pauses) <= most
    assert set(pauses) == {_base.PACE_SLEEP}
