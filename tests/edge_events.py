"""Rules and events at the edges of SPEC sections 1 and 3, on which the C
readers (bench/native_gate.c, etl_gate/fastpath) are checked event by event
against the Python core."""

from __future__ import annotations

RULES = {"version": 7, "rules": [
    {"app": "1128", "event": "play", "priority": "P0"},
    {"app": "1128", "event": "scroll", "priority": "P2", "sample_rate": 0.5},
    {"app": "1128", "event": "like", "priority": "P1", "sample_rate": 0.25, "sample_key": "dev"},
    {"app": "1128", "event": "gone", "state": "offline"},
    {"app": "é", "event": "ünï", "priority": "P1"},
]}

EDGE_CASES = [
    b'{"app_id":"1128","event":"play"}',
    b'{"app_id":1128,"event":"play"}',
    b'  {"app_id" : "1128" ,\t"event":"play" , "x": [1, {"y": null}]}  ',
    b'{"app_id":"1128","event":"nope"}',
    b'{"app_id":"1128","event":"gone"}',
    b'{"app_id":"\\u0031128","event":"pl\\u0061y"}',       # escapes in the values
    b'{"\\u0061pp_id":"1128","event":"play"}',              # and in a key
    b'{"app_id":"x","event":"play","app_id":"1128"}',       # duplicate: the last wins
    b'{"app_id":"\xc3\xa9","event":"\xc3\xbcn\xc3\xaf"}',    # UTF-8 names
    b'{"app_id":"\\u00e9","event":"\\u00fcn\\u00ef"}',
    b'{"app_id":"1128","event":"play","p":"\xf0\x9f\x98\x80"}',
    b'{"app_id":"1128","event":"play","p":"\\ud83d\\ude00"}',
    b'{"app_id":"1128","event":"play","p":"\\ud800"}',           # lone surrogates: invalid
    b'{"app_id":"1128","event":"play","p":"x\\udc00"}',
    b'{"app_id":"1128","event":"play","p":"\\ud800\\u0041"}',
    b'{"app_id":"\\ud83d\\ude00","event":"play"}',
    b'{"app_id":"1128","event":"play","p":"\xed\xa0\x80"}',   # an encoded surrogate: invalid
    b'{"app_id":"1128","event":"play","p":"\xc0\xaf"}',       # overlong: invalid
    b'{"app_id":"1128","event":"play","p":"a\tb"}',           # raw control character
    b'{"app_id":"1128","event":"play","p":01}',
    b'{"app_id":"1128","event":"play","p":1.}',
    b'{"app_id":"1128","event":"play","p":-1.5e+3}',
    b'{"app_id":"1128","event":"play","p":123456789012345678901234567890}',
    b'{"app_id":"1128","event":"play",}',
    b'{"app_id":"1128","event":"play"} x',
    b'{"app_id":"1128","event":"play"',
    b'[{"app_id":"1128","event":"play"}]',
    b'"play"',
    b'',
    b'{}',
    b'{"event":"play"}',
    b'{"app_id":true,"event":"play"}',
    b'{"app_id":null,"event":"play"}',
    b'{"app_id":{"a":1},"event":"play"}',
    b'{"app_id":"1128"}',
    b'{"app_id":"1128","event":5}',
    b'{"app_id":"1128","event":"play","p":tru}',
    b'{"app_id":"1128","event":"play","p":[1,2,]}',
    b'{"app_id":"1128","event":"play","p":"\\x"}',
    b'{"app_id":"1128","event":"play","p":"\\u12"}',
    b'[' * 1100 + b']' * 1100,
]
# Sampling: every kind of key value, 40 users each, kept or not by the hash.
for i in range(40):
    EDGE_CASES += [
        b'{"app_id":"1128","event":"scroll","user_id":"u%d"}' % i,
        b'{"app_id":"1128","event":"scroll","user_id":%d}' % i,
        b'{"app_id":"1128","event":"scroll","user_id":null,"device_id":"d%d"}' % i,
        b'{"app_id":"1128","event":"scroll","user_id":"\\u00e9%d"}' % i,
        b'{"app_id":"1128","event":"scroll","user_id":true,"n":%d}' % i,
        b'{"app_id":"1128","event":"scroll","user_id":[%d,"a"]}' % i,
        b'{"app_id":"1128","event":"scroll","n":%d}' % i,  # no key: the raw bytes
        b'{"app_id":"1128","event":"like","user_id":"u1","dev":"d%d"}' % i,
        b'{"app_id":"1128","event":"like","user_id":"u%d"}' % i,  # the rule's key only
    ]
