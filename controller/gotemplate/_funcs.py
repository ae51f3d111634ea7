"""The functions a template can call: Go's builtins and the common sprig/ESO set.

Why this module exists: each function follows the documented behaviour of its Go
original (argument order made for pipelines, sprig's lenient number conversion, Go's
comparison rules), and every one is pure: no clock, no randomness, no environment, no
I/O. Functions raise FuncError with the function's name and the kind of a bad argument,
never its value; the executor adds the template name and position.
"""

from __future__ import annotations

from ._args import Func
from ._builtins import (
    f_eq,
    f_ge,
    f_gt,
    f_html,
    f_index,
    f_le,
    f_len,
    f_lt,
    f_ne,
    f_not,
    f_print,
    f_printf,
    f_println,
    f_slice,
    f_urlquery,
)
from ._data import (
    f_add,
    f_add1,
    f_adler32sum,
    f_all,
    f_any,
    f_append,
    f_atoi,
    f_b32dec,
    f_b32enc,
    f_b64dec,
    f_b64enc,
    f_coalesce,
    f_compact,
    f_concat,
    f_default,
    f_dict,
    f_dig,
    f_div,
    f_empty,
    f_filter_pem,
    f_first,
    f_float64,
    f_from_json,
    f_from_yaml,
    f_get,
    f_has,
    f_has_key,
    f_initial,
    f_int,
    f_json_path,
    f_keys,
    f_last,
    f_list,
    f_max,
    f_merge_json,
    f_min,
    f_mod,
    f_mul,
    f_omit,
    f_parse_key_value,
    f_pick,
    f_prepend,
    f_rest,
    f_reverse,
    f_set,
    f_sha1sum,
    f_sha256sum,
    f_sub,
    f_ternary,
    f_to_json,
    f_to_lines,
    f_to_pretty_json,
    f_to_raw_json,
    f_to_yaml,
    f_uniq,
    f_unset,
    f_values,
    f_without,
)
from ._strings import (
    f_cat,
    f_contains,
    f_has_prefix,
    f_has_suffix,
    f_indent,
    f_join,
    f_lower,
    f_nindent,
    f_nospace,
    f_quote,
    f_repeat,
    f_replace,
    f_sort_alpha,
    f_split,
    f_split_list,
    f_splitn,
    f_squote,
    f_substr,
    f_title,
    f_to_string,
    f_to_strings,
    f_trim,
    f_trim_all,
    f_trim_prefix,
    f_trim_suffix,
    f_trunc,
    f_upper,
)

# ---- the table ---------------------------------------------------------------------

# name: (implementation, minimum arguments, maximum arguments or None for any number)
FUNCTIONS: dict[str, tuple[Func, int, int | None]] = {
    # Go text/template builtins (and, or are evaluated lazily by the executor)
    "not": (f_not, 1, 1), "len": (f_len, 1, 1), "index": (f_index, 1, None),
    "slice": (f_slice, 1, 4), "print": (f_print, 0, None), "println": (f_println, 0, None),
    "printf": (f_printf, 1, None), "html": (f_html, 0, None),
    "urlquery": (f_urlquery, 0, None), "eq": (f_eq, 1, None), "ne": (f_ne, 2, 2),
    "lt": (f_lt, 2, 2), "le": (f_le, 2, 2), "gt": (f_gt, 2, 2), "ge": (f_ge, 2, 2),
    # sprig: strings
    "upper": (f_upper, 1, 1), "lower": (f_lower, 1, 1), "title": (f_title, 1, 1),
    "trim": (f_trim, 1, 1), "trimAll": (f_trim_all, 2, 2),
    "trimPrefix": (f_trim_prefix, 2, 2), "trimSuffix": (f_trim_suffix, 2, 2),
    "nospace": (f_nospace, 1, 1), "replace": (f_replace, 3, 3), "repeat": (f_repeat, 2, 2),
    "substr": (f_substr, 3, 3), "trunc": (f_trunc, 2, 2), "contains": (f_contains, 2, 2),
    "hasPrefix": (f_has_prefix, 2, 2), "hasSuffix": (f_has_suffix, 2, 2),
    "quote": (f_quote, 0, None), "squote": (f_squote, 0, None), "cat": (f_cat, 0, None),
    "indent": (f_indent, 2, 2), "nindent": (f_nindent, 2, 2),
    "toString": (f_to_string, 1, 1), "toStrings": (f_to_strings, 1, 1),
    "split": (f_split, 2, 2), "splitn": (f_splitn, 3, 3), "splitList": (f_split_list, 2, 2),
    "join": (f_join, 2, 2), "sortAlpha": (f_sort_alpha, 1, 1),
    # sprig and ESO: encodings
    "b64enc": (f_b64enc, 1, 1), "b64dec": (f_b64dec, 1, 1), "b32enc": (f_b32enc, 1, 1),
    "b32dec": (f_b32dec, 1, 1), "toJson": (f_to_json, 1, 1), "mustToJson": (f_to_json, 1, 1),
    "toPrettyJson": (f_to_pretty_json, 1, 1), "mustToPrettyJson": (f_to_pretty_json, 1, 1),
    "toRawJson": (f_to_raw_json, 1, 1), "mustToRawJson": (f_to_raw_json, 1, 1),
    "fromJson": (f_from_json, 1, 1), "mustFromJson": (f_from_json, 1, 1),
    "toYaml": (f_to_yaml, 1, 1), "fromYaml": (f_from_yaml, 1, 1),
    "sha1sum": (f_sha1sum, 1, 1), "sha256sum": (f_sha256sum, 1, 1),
    "adler32sum": (f_adler32sum, 1, 1), "filterPEM": (f_filter_pem, 2, 2),
    # ack-secret-manager v0.6
    "jsonPath": (f_json_path, 2, 2), "mergeJson": (f_merge_json, 2, 2),
    "parseKeyValue": (f_parse_key_value, 1, 1), "toLines": (f_to_lines, 1, 1),
    # sprig: defaults and flow (required and fail are handled by the executor)
    "default": (f_default, 1, 2), "empty": (f_empty, 1, 1), "coalesce": (f_coalesce, 0, None),
    "ternary": (f_ternary, 3, 3), "all": (f_all, 0, None), "any": (f_any, 0, None),
    # sprig: lists
    "list": (f_list, 0, None), "tuple": (f_list, 0, None), "first": (f_first, 1, 1),
    "mustFirst": (f_first, 1, 1), "last": (f_last, 1, 1), "mustLast": (f_last, 1, 1),
    "rest": (f_rest, 1, 1), "initial": (f_initial, 1, 1), "append": (f_append, 2, 2),
    "push": (f_append, 2, 2), "mustAppend": (f_append, 2, 2), "prepend": (f_prepend, 2, 2),
    "concat": (f_concat, 0, None), "reverse": (f_reverse, 1, 1), "has": (f_has, 2, 2),
    "uniq": (f_uniq, 1, 1), "without": (f_without, 1, None), "compact": (f_compact, 1, 1),
    # sprig: dicts
    "dict": (f_dict, 0, None), "get": (f_get, 2, 2), "set": (f_set, 3, 3),
    "unset": (f_unset, 2, 2), "hasKey": (f_has_key, 2, 2), "keys": (f_keys, 1, None),
    "values": (f_values, 1, 1), "pick": (f_pick, 1, None), "omit": (f_omit, 1, None),
    "dig": (f_dig, 3, None),
    # sprig: numbers
    "add": (f_add, 0, None), "add1": (f_add1, 1, 1), "sub": (f_sub, 2, 2),
    "mul": (f_mul, 1, None), "div": (f_div, 2, 2), "mod": (f_mod, 2, 2),
    "max": (f_max, 1, None), "min": (f_min, 1, None), "int": (f_int, 1, 1),
    "int64": (f_int, 1, 1), "float64": (f_float64, 1, 1), "atoi": (f_atoi, 1, 1),
}

# Evaluated by the executor itself: and/or stop at the first deciding argument;
# required/fail take their message from the template text only.
SPECIAL = {"and": (1, None), "or": (1, None), "required": (2, 2), "fail": (1, 1)}

_TIME = "it reads the clock, so the Secret would change on every sync"
_RANDOM = "it is random or generates keys, so the Secret would change on every sync"
_REGEX = ("Go's RE2 regular expressions are not reproduced (and a backtracking engine "
          "could run without bound); use replace, split or trimPrefix")
_KEYS = "External Secrets Operator's PKCS#12 and JWK functions are not implemented"

UNSUPPORTED: dict[str, str] = {
    "bcrypt": "it salts at random, so the Secret would change on every sync",
    "htpasswd": "it salts at random, so the Secret would change on every sync",
    "env": "it reads the controller's environment",
    "expandenv": "it reads the controller's environment",
    "getHostByName": "it does network I/O",
    "call": "template data holds no functions",
    "js": "JavaScript escaping is not implemented",
    **{name: _TIME for name in (
        "now", "date", "dateInZone", "dateModify", "mustDateModify", "ago", "duration",
        "durationRound", "unixEpoch", "htmlDate", "htmlDateInZone", "toDate", "mustToDate")},
    **{name: _RANDOM for name in (
        "randAlpha", "randAlphaNum", "randAscii", "randNumeric", "randBytes", "randInt",
        "uuidv4", "genPrivateKey", "genCA", "genCAWithKey", "genSelfSignedCert",
        "genSelfSignedCertWithKey", "genSignedCert", "genSignedCertWithKey",
        "encryptAES", "decryptAES", "derivePassword", "shuffle")},
    **{name: _REGEX for name in (
        "regexMatch", "regexFind", "regexFindAll", "regexReplaceAll",
        "regexReplaceAllLiteral", "regexSplit", "regexQuoteMeta", "mustRegexMatch",
        "mustRegexFind", "mustRegexFindAll", "mustRegexReplaceAll",
        "mustRegexReplaceAllLiteral", "mustRegexSplit")},
    **{name: _KEYS for name in (
        "pkcs12key", "pkcs12keyPass", "pkcs12cert", "pkcs12certPass", "pemCertificate",
        "pemPrivateKey", "jwkPublicKeyPem", "jwkPrivateKeyPem")},
}
