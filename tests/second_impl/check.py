"""Checks the second implementation against protocol/tests/vectors/*.txt. Exit 1 on failure."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import threadline as T  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
VEC = os.path.join(ROOT, "protocol", "tests", "vectors")
FAILED = []


def blocks(name):
    """[(title, [(key, value), ...])]; lines before the first ## go under title ''."""
    out = [("", [])]
    for line in open(os.path.join(VEC, name), encoding="utf-8"):
        line = line.rstrip("\n")
        if line.startswith("## "):
            out.append((line[3:], []))
        elif line and not line.startswith("#"):
            k, _, v = line.partition(": ")
            out[-1][1].append((k, v))
    return out


def get(fields, key):
    return [v for k, v in fields if k == key]


def one(fields, key):
    vs = get(fields, key)
    return vs[0] if vs else None


def check(group, cond, what):
    if not cond:
        FAILED.append(f"{group}: {what}")
        print(f"FAIL {group}: {what}")
    return bool(cond)


def report(group, n, unit):
    bad = [f for f in FAILED if f.startswith(group + ":")]
    print(f"{group}: {n} {unit} {'ok' if not bad else f'({len(bad)} failures)'}")


H = bytes.fromhex


def check_events():
    n_ev = n_frames = n_certs = 0
    for title, f in blocks("events.txt"):
        g = "events"
        if one(f, "event"):
            raw = H(one(f, "event"))
            ev = T.decode(T.Event, raw, T.LIMIT_EVENT)
            h = ev["signed"]["header"]
            check(g, T.Event.enc(ev) == raw, f"{title}: re-encode")
            check(g, T.EventHeader.enc(h).hex() == one(f, "header"), f"{title}: header")
            check(g, T.decode(T.EventHeader, H(one(f, "header"))) == h, f"{title}: header decode")
            if one(f, "content"):
                ver, c = ev["content"]
                check(g, T.CONTENT_T[ver].enc(c).hex() == one(f, "content"), f"{title}: content")
                check(g, T.content_hash(ev["content"]).hex() == one(f, "content_hash"),
                      f"{title}: content_hash")
                check(g, h["content_hash"].hex() == one(f, "content_hash"), f"{title}: header hash")
            else:
                check(g, ev["content"][0] == "None", f"{title}: content absent")
            check(g, ev["signed"]["signature"].hex() == one(f, "signature"), f"{title}: signature")
            check(g, T.event_id(ev).hex() == one(f, "id"), f"{title}: id")
            check(g, T.to_json(T.Event, ev) == json.loads(one(f, "json")), f"{title}: json")
            check(g, T.verify_event(ev, len(raw)) is None,
                  f"{title}: verify_event -> {T.verify_event(ev, len(raw))}")
            seed = bytes([int(one(f, "author_seed"), 16)]) * 32
            check(g, T.public_key(seed) == h["author"], f"{title}: author from seed")
            msg = T.dom("threadline/event/v1", T.EventHeader.enc(h))
            check(g, T.sign(seed, msg) == ev["signed"]["signature"], f"{title}: RFC 8032 re-sign")
            n_ev += 1
        if one(f, "certificate") and one(f, "body"):
            raw = H(one(f, "certificate"))
            cert = T.decode(T.Certificate, raw, T.LIMIT_CERT)
            check(g, T.CertificateBody.enc(cert["body"]).hex() == one(f, "body"), f"{title}: body")
            check(g, T.verify_certificate(cert), f"{title}: certificate signature")
            check(g, T.to_json(T.Certificate, cert) == json.loads(one(f, "json")), f"{title}: json")
            seed = bytes([int(one(f, "author_seed"), 16)]) * 32
            check(g, T.sign(seed, T.dom("threadline/cert/v1", H(one(f, "body"))))
                  == cert["signature"], f"{title}: certificate re-sign")
            n_certs += 1
        if one(f, "frame"):
            raw = H(one(f, "frame"))
            m = T.decode(T.SyncMessage, raw, T.LIMIT_FRAME)
            check(g, T.SyncMessage.enc(m) == raw, f"{title}: frame re-encode")
            check(g, T.to_json(T.SyncMessage, m) == json.loads(one(f, "json")), f"{title}: json")
            if m[0] == "Summary" and one(f, "heads"):
                hs = [H(x) for x in one(f, "heads").split(",")]
                check(g, m[1]["scopes"][0]["heads_digest"] == T.heads_digest(hs),
                      f"{title}: heads_digest")
                summary = m[1]["scopes"]
            if m[0] == "Digest":
                check(g, m[1]["digest"] == T.summaries_digest(summary), f"{title}: digest")
            if m[0] == "Buckets":
                want = [T.summaries_digest([x for x in summary if T.bucket(x) == b])
                        for b in range(256)]
                check(g, m[1]["digests"] == want, f"{title}: bucket digests of sync.summary")
            if m[0] in ("Events", "Push"):
                check(g, all(T.verify_event(e) is None for e in m[1]["events"]),
                      f"{title}: its events verify")
            if m[0] == "Hello":
                check(g, T.verify_certificate(m[1]["certificate"]), f"{title}: hello cert")
            n_frames += 1
    report("events", n_ev, "vectors")
    report("events", n_certs, "certificates")
    report("events", n_frames, "sync frames")


def check_strictness():
    """§2.3: mutations of a vector event must be refused with the right error."""
    g, n = "strictness", 0
    f = dict(blocks("events.txt")[1][1])  # thread.opened
    raw = H(f["event"])

    def refuses(b, kind, what, t=T.Event, limit=T.LIMIT_EVENT):
        nonlocal n
        n += 1
        try:
            T.decode(t, b, limit)
            check(g, False, f"{what}: accepted")
        except T.DecodeError as e:
            check(g, e.kind == kind, f"{what}: {e.kind} instead of {kind}")

    refuses(raw + b"\x00", "TrailingBytes", "trailing byte")
    refuses(raw[:-1], "Truncated", "truncated")
    refuses(b"\x04" + raw[1:], "UnknownVariant", "scope index 4")
    # scope NewThread, parents count written as 0xfb 0x00 0x00 (non-shortest varint)
    refuses(raw[:1] + b"\xfb\x00\x00" + raw[2:], "NonCanonical", "long varint")
    refuses(raw[:1] + b"\xfe" + raw[2:], "Invalid", "varint tag 0xfe")
    refuses(b"\xfd" + b"\x01" + b"\x00" * 7 + raw[1:], "Invalid", "u64 tag for enum index (u32)")
    refuses(bytes(T.LIMIT_EVENT + 1), "TooLarge", "event over the limit")
    # author key with y >= p: author starts after scope(1) parents(1) depth(1)
    bad = raw[:3] + b"\xff" * 31 + b"\x7f" + raw[35:]
    refuses(bad, "Invalid", "author y >= p")
    # agent option tag 2 (offset 35)
    refuses(raw[:35] + b"\x02" + raw[36:], "Invalid", "option tag 2")
    # V2 content with neither subject nor original
    v1 = T.ContentV1.enc({"text": "x", "attachments": [], "external_id": None, "handle": None})
    refuses(b"\x02" + v1 + b"\x00\x00", "Invalid", "V2 without subject/original", T.EventContent)
    refuses(b"\x03" + v1 + b"\x00" * 4, "Invalid", "V3 without template/reply_to", T.EventContent)
    refuses(b"\x01" + v1[:-1] + b"\x01\x01\x03A@b", "Invalid", "handle not normalised",
            T.EventContent)
    refuses(b"\x01" + v1[:-2] + b"\x01\x00\x00", "Invalid", "empty external_id", T.EventContent)
    refuses(b"\x01\x01\xff" + v1[2:], "Invalid", "bad utf-8", T.EventContent)
    refuses(b"\x0b\x01", "TrailingBytes", "Ack with a trailing byte", T.SyncMessage, T.LIMIT_FRAME)
    refuses(b"\x10", "UnknownVariant", "SyncMessage tag 16", T.SyncMessage, T.LIMIT_FRAME)
    refuses(b"\x02" + bytes(33) + b"\x00\x00\xfd" + bytes(8), "Invalid", "max_events u64 tag",
            T.SyncMessage, T.LIMIT_FRAME)
    report(g, n, "refusals")


def check_state():
    bl = dict(blocks("state.txt"))
    g = "signature"
    f = bl["signature.small_order_component"]
    key, sig = H(one(f, "key")), H(one(f, "signature"))
    msg = T.dom(one(f, "domain"), H(one(f, "message")))
    check(g, one(f, "verdict") == "valid", "vector says valid")
    check(g, T.verify(key, msg, sig), "cofactored verifier accepts")
    check(g, not T.verify_cofactorless(key, msg, sig), "cofactorless verifier refuses")
    check(g, not T.verify(key, T.dom("threadline/cert/v1", H(one(f, "message"))), sig),
          "other domain refused")
    # Own constructions: R with a small-order component (valid by rule 4, cofactorless refuses),
    # s + l (rule 3), small-order A (rule 1), a flipped bit.
    seed, m = bytes(range(32)), T.dom("threadline/event/v1", b"x")
    A = T.public_key(seed)
    T8 = T.p_decode(H("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"))
    check(g, T.small_order(T8) and not T.order_divides_4(T8), "order-8 point")
    hh = T.hashlib.sha512(seed).digest()
    a = int.from_bytes(hh[:32], "little") & ((1 << 254) - 8) | (1 << 254)
    r = 12345
    R = T.p_encode(T.p_add(T.p_mul(r, T.BASE), T8))
    k = int.from_bytes(T.hashlib.sha512(R + A + m).digest(), "little") % T.L
    s_small = R + ((r + k * a) % T.L).to_bytes(32, "little")
    check(g, T.verify(A, m, s_small), "R with small-order component: valid")
    check(g, not T.verify_cofactorless(A, m, s_small),
          "R with small-order component: cofactorless refuses")
    good = T.sign(seed, m)
    check(g, T.verify(A, m, good) and T.verify_cofactorless(A, m, good), "honest signature")
    s_big = good[:32] + (int.from_bytes(good[32:], "little") + T.L).to_bytes(32, "little")
    check(g, not T.verify(A, m, s_big), "s >= l refused")
    check(g, not T.verify(b"\x01" + bytes(31), m, good), "identity key refused")
    check(g, not T.verify(b"\x01" + bytes(30) + b"\x80", m, good), "x=0 with sign bit key refused")
    check(g, not T.verify(A, m, bytes([good[0] ^ 1]) + good[1:]), "flipped bit refused")
    report(g, 11, "checks (small-order vector, own constructions)")

    g = "order"
    f = bl["thread.concurrent_heads"]
    hs = [H(x) for x in one(f, "heads").split(",")]
    check(g, T.heads_digest(hs).hex() == one(f, "heads_digest"), "concurrent heads_digest")
    f = bl["thread.events"]
    events = {}
    for x in get(f, "event"):
        ev = T.decode(T.Event, H(x), T.LIMIT_EVENT)
        check(g, T.verify_event(ev) is None, f"thread event verifies: {T.verify_event(ev)}")
        events[T.event_id(ev)] = ev
    order = T.linear_order(events)
    first5 = {i: events[i] for i in order[:5]}
    check(g, T.heads(first5) == sorted(hs), "concurrent heads are the heads of the first 5 events")
    check(g, [i.hex() for i in order] == one(f, "order").split(","), "linear order")
    report(g, len(events), "thread events ordered, heads_digest")

    g = "thread_state"
    st = T.fold_thread(events)
    enc = T.ThreadState.enc(st)
    check(g, enc.hex() == one(f, "state"), f"state\n got {enc.hex()}\nwant {one(f, 'state')}")
    check(g, T.thread_state_hash(st).hex() == one(f, "state_hash"), "state_hash")
    report(g, 2, "checks (state, state_hash)")

    g = "directory_state"
    f = bl["directory.events"]
    devents = {}
    for x in get(f, "event"):
        ev = T.decode(T.Event, H(x), T.LIMIT_EVENT)
        check(g, T.verify_event(ev) is None, f"directory event verifies: {T.verify_event(ev)}")
        devents[T.event_id(ev)] = ev
    st = T.fold_directory(devents)
    enc = T.DirectoryState.enc(st)
    check(g, enc.hex() == one(f, "state"), f"state\n got {enc.hex()}\nwant {one(f, 'state')}")
    check(g, T.directory_state_hash(st).hex() == one(f, "state_hash"), "state_hash")
    report(g, len(devents), "events folded; state and state_hash")

    g = "sync"
    f = bl["sync.summaries"]
    sums, buckets = [], {}
    for x in get(f, "summary"):
        hexs, _, b = x.partition(" bucket=")
        s = T.decode(T.ScopeSummary, H(hexs))
        check(g, T.bucket(s) == int(b, 16), "bucket")
        sums.append(s)
        buckets.setdefault(T.bucket(s), []).append(s)
    check(g, T.summaries_digest(sums).hex() == one(f, "summaries_digest"), "summaries_digest")
    check(g, T.summaries_digest([]).hex() == one(f, "empty_bucket_digest"), "empty bucket")
    for x in get(f, "bucket_digest"):
        b, d = x.split()
        check(g, T.summaries_digest(buckets[int(b, 16)]).hex() == d, f"bucket {b}")
    report(g, len(sums), "summaries; digests")


def check_auth():
    g = "auth"
    bl = blocks("auth.txt")
    head = bl[0][1]
    certs = [T.decode(T.Certificate, H(x), T.LIMIT_CERT) for x in get(head, "certificate")]
    check(g, all(T.verify_certificate(c) for c in certs), "certificates verify")
    judge = T.ThreadAuth(certs, int(one(head, "now")))
    n = 0
    for title, f in bl[1:]:
        ev = T.decode(T.Event, H(one(f, "event")), T.LIMIT_EVENT)
        check(g, T.event_id(ev).hex() == one(f, "id"), f"{title}: id")
        err = judge.judge(ev)
        got = "accept" if err is None else f"refuse {err}"
        check(g, got == one(f, "verdict"), f"{title}: got {got!r}, want {one(f, 'verdict')!r}")
        n += 1
    report(g, n, "verdicts")


def check_auth_rules():
    """auth_rules.txt: every event goes to the log its scope names. NewThread: a new thread
    (kept only if its Opened is accepted); Thread(id): that thread; Directory(org): that
    directory (opened by its Genesis), judged by its own published certificates only."""
    g = "auth_rules"
    bl = blocks("auth_rules.txt")
    head = bl[0][1]
    now = int(one(head, "now"))
    certs = [T.decode(T.Certificate, H(x), T.LIMIT_CERT) for x in get(head, "certificate")]
    check(g, all(T.verify_certificate(c) for c in certs), "certificates verify")
    revocations = {}
    for x in get(head, "revoked"):
        key, t = x.split()
        T.add_revocation(revocations, H(key), int(t))
    check(g, len(revocations) == len(get(head, "revoked")) > 0, "revoked lines parsed")
    threads, directories = {}, {}
    n, kinds = 0, set()
    for title, f in bl[1:]:
        ev = T.decode(T.Event, H(one(f, "event")), T.LIMIT_EVENT)
        eid = T.event_id(ev)
        check(g, eid.hex() == one(f, "id"), f"{title}: id {eid.hex()} != {one(f, 'id')}")
        scope, arg = ev["signed"]["header"]["scope"]
        if scope == "NewThread":
            log = T.ThreadAuth(certs, now, revocations)
        elif scope == "Thread":
            log = threads.get(arg) or T.ThreadAuth(certs, now, revocations)
        else:
            log = directories.get(arg) or T.DirectoryAuth(arg, now)
        err = log.judge(ev)
        if err is None:
            if scope == "NewThread":
                threads[eid] = log
            elif scope == "Thread":
                threads.setdefault(arg, log)
            else:
                directories.setdefault(arg, log)
        got = "accept" if err is None else f"refuse {err}"
        want = one(f, "verdict")
        check(g, got == want, f"{title}: got {got!r}, want {want!r}")
        kinds.add(want)
        n += 1
    report(g, n, f"verdicts ({len(kinds)} distinct; {len(threads)} thread, "
                 f"{len(directories)} directory logs)")


def main():
    for fn in (check_events, check_strictness, check_state, check_auth, check_auth_rules):
        try:
            fn()
        except Exception as e:  # a crash is a failure of that group
            import traceback
            traceback.print_exc()
            FAILED.append(f"{fn.__name__}: crashed: {e!r}")
    if FAILED:
        print(f"{len(FAILED)} FAILURES")
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
