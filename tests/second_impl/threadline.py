"""A second implementation of the Threadline protocol v1, from docs/PROTOCOL.md only.

Standard library only. Values: a struct is a dict; an enum with fields is (name, payload)
(payload None for a unit variant); a field-less enum (ChannelKind, ReceiptKind) is its name;
a Handle is (channel, address); maps are dicts, sets are Python sets.
"""
import hashlib
import unicodedata


class DecodeError(Exception):
    """kind: TooLarge, Truncated, TrailingBytes, UnknownVariant, Invalid, NonCanonical."""

    def __init__(self, kind, detail=""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


# ---------------------------------------------------------------- §2 canonical encoding

class Reader:
    def __init__(self, b):
        self.b, self.i = b, 0

    def take(self, n):
        if self.i + n > len(self.b):
            raise DecodeError("Truncated")
        out = self.b[self.i:self.i + n]
        self.i += n
        return out


def enc_varint(v):
    if v < 251:
        return bytes([v])
    if v < 1 << 16:
        return b"\xfb" + v.to_bytes(2, "little")
    if v < 1 << 32:
        return b"\xfc" + v.to_bytes(4, "little")
    return b"\xfd" + v.to_bytes(8, "little")


class Int:
    def __init__(self, bits):
        self.bits = bits

    def dec(self, r):
        t = r.take(1)[0]
        if t < 251:
            return t
        n = {0xfb: 2, 0xfc: 4, 0xfd: 8}.get(t)
        if n is None or n * 8 > self.bits:
            raise DecodeError("Invalid", f"varint tag {t:#x} for u{self.bits}")
        return int.from_bytes(r.take(n), "little")   # shortest form: whole-value re-encode check

    def enc(self, v):
        return enc_varint(v)

    def key(self, v):
        return v


class U8Type:
    def dec(self, r): return r.take(1)[0]
    def enc(self, v): return bytes([v])
    def key(self, v): return v


class BoolType:
    def dec(self, r):
        t = r.take(1)[0]
        if t > 1:
            raise DecodeError("Invalid", "bool")
        return t == 1

    def enc(self, v): return b"\x01" if v else b"\x00"
    def key(self, v): return int(v)


P = 2**255 - 19


class Fixed:
    def __init__(self, n, is_key=False):
        self.n, self.is_key = n, is_key

    def dec(self, r):
        b = r.take(self.n)
        if self.is_key and int.from_bytes(b, "little") & ((1 << 255) - 1) >= P:
            raise DecodeError("Invalid", "key with y >= p")
        return b

    def enc(self, v):
        assert len(v) == self.n
        return bytes(v)

    def key(self, v): return bytes(v)


class BytesType:
    def dec(self, r): return r.take(U64.dec(r))
    def enc(self, v): return enc_varint(len(v)) + bytes(v)
    def key(self, v): return bytes(v)


def is_cc(ch):
    return unicodedata.category(ch) == "Cc"


class Str:
    """kind: 'any' (text, Refused.reason), 'short' (1..256), 'long' (1..1024, subject/param)."""

    def __init__(self, kind="any"):
        self.kind = kind

    def dec(self, r):
        raw = r.take(U64.dec(r))
        try:
            s = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("Invalid", "utf-8")
        if self.kind != "any":
            lim = 256 if self.kind == "short" else 1024
            if not 1 <= len(raw) <= lim or any(is_cc(c) for c in s):
                raise DecodeError("Invalid", f"{self.kind} string {s!r}")
        return s

    def enc(self, v):
        b = v.encode("utf-8")
        return enc_varint(len(b)) + b

    def key(self, v): return v.encode("utf-8")


class Opt:
    def __init__(self, t): self.t = t

    def dec(self, r):
        tag = r.take(1)[0]
        if tag > 1:
            raise DecodeError("Invalid", "option tag")
        return self.t.dec(r) if tag else None

    def enc(self, v): return b"\x00" if v is None else b"\x01" + self.t.enc(v)
    def key(self, v): return (0,) if v is None else (1, self.t.key(v))


class Vec:
    def __init__(self, t): self.t = t
    def dec(self, r): return [self.t.dec(r) for _ in range(U64.dec(r))]
    def enc(self, v): return enc_varint(len(v)) + b"".join(self.t.enc(x) for x in v)
    def key(self, v): return tuple(self.t.key(x) for x in v)


class SetT(Vec):
    """A sorted set (encoding only is needed here): ascending by §2.1 order, no duplicates."""

    def enc(self, v):
        return Vec.enc(self, sorted(set(v), key=self.t.key))


class MapT:
    def __init__(self, k, v): self.k, self.v = k, v

    def enc(self, d):
        items = sorted(d.items(), key=lambda kv: self.k.key(kv[0]))
        return enc_varint(len(items)) + b"".join(self.k.enc(k) + self.v.enc(v) for k, v in items)


class Tuple:
    def __init__(self, *ts): self.ts = ts
    def dec(self, r): return tuple(t.dec(r) for t in self.ts)
    def enc(self, v): return b"".join(t.enc(x) for t, x in zip(self.ts, v))
    def key(self, v): return tuple(t.key(x) for t, x in zip(self.ts, v))


class Struct:
    def __init__(self, check=None, **fields):
        self.fields, self.check = list(fields.items()), check

    def dec(self, r):
        v = {name: t.dec(r) for name, t in self.fields}
        if self.check:
            self.check(v)
        return v

    def enc(self, v): return b"".join(t.enc(v[name]) for name, t in self.fields)
    def key(self, v): return tuple(t.key(v[name]) for name, t in self.fields)


class Enum:
    """Variants (name, payload type or None). A field-less enum (all None) uses bare names."""

    def __init__(self, *variants):
        self.variants = variants
        self.index = {name: i for i, (name, _) in enumerate(variants)}
        self.plain = all(t is None for _, t in variants)

    def dec(self, r):
        i = U32.dec(r)
        if i >= len(self.variants):
            raise DecodeError("UnknownVariant", f"{i}")
        name, t = self.variants[i]
        if self.plain:
            return name
        return (name, t.dec(r) if t else None)

    def enc(self, v):
        if self.plain:
            return enc_varint(self.index[v])
        name, payload = v
        t = self.variants[self.index[name]][1]
        return enc_varint(self.index[name]) + (t.enc(payload) if t else b"")

    def key(self, v):
        if self.plain:
            return (self.index[v],)
        t = self.variants[self.index[v[0]]][1]
        return (self.index[v[0]], t.key(v[1]) if t else ())


U32, U64, U8, BOOL = Int(32), Int(64), U8Type(), BoolType()
ID, KEY, CID, SIG = Fixed(32), Fixed(32, True), Fixed(16), Fixed(64)
SHORT, LONG, TEXT = Str("short"), Str("long"), Str("any")
CHANNELS = ("webchat", "email", "whatsapp", "messenger", "slack", "telegram", "sms", "matrix",
            "xmpp", "instagram")
Channel = Enum(*[(c, None) for c in CHANNELS])

# ---------------------------------------------------------------- §2.4 handles

def is_ws(ch):  # Unicode White_Space property (the 25 code points)
    return ch in ("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
                  "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


def trim(s):
    a, b = 0, len(s)
    while a < b and is_ws(s[a]):
        a += 1
    while b > a and is_ws(s[b - 1]):
        b -= 1
    return s[a:b]


def normalise_address(channel, address):
    """Returns the normalised address, or None if it cannot be a valid address."""
    if channel == "email":
        a = trim(address).lower()
        local, at, domain = a.rpartition("@")
        if not at or not local or not domain:
            return None
    elif channel in ("sms", "whatsapp"):
        a = "".join(c for c in address if c not in " -().")
        if len(a) < 2 or a[0] != "+" or not all(c in "0123456789" for c in a[1:]):
            return None
    else:
        a = trim(address)
    if not 1 <= len(a.encode()) <= 320 or any(is_ws(c) or is_cc(c) for c in a):
        return None
    return a


class HandleType:
    def dec(self, r):
        ch, addr = Channel.dec(r), Str().dec(r)
        if normalise_address(ch, addr) != addr:
            raise DecodeError("Invalid", f"handle {ch}:{addr!r}")
        return (ch, addr)

    def enc(self, v): return Channel.enc(v[0]) + Str().enc(v[1])
    def key(self, v): return (Channel.key(v[0]), v[1].encode())


Handle = HandleType()

# ---------------------------------------------------------------- §2.2 types

CertRole = Enum(("Node", None),
                ("Bridge", Struct(channel=Channel, handle_scope=Opt(Handle))),
                ("Agent", Struct(agent=CID)))
CertificateBody = Struct(org=KEY, subject=KEY, role=CertRole, not_before=U64, not_after=U64)
Certificate = Struct(body=CertificateBody, signature=SIG)

Attachment = Struct(blob=ID, size=U64, media_type=SHORT, name=SHORT)
Template = Struct(name=SHORT, language=SHORT, parameters=Vec(LONG))
_V1 = dict(text=TEXT, attachments=Vec(Attachment), external_id=Opt(SHORT), handle=Opt(Handle))
_V2 = dict(_V1, subject=Opt(LONG), original=Opt(Attachment))
_V3 = dict(_V2, template=Opt(Template), reply_to=Opt(ID))


def _check_v2(v):
    if v["subject"] is None and v["original"] is None:
        raise DecodeError("Invalid", "V2 content without subject or original")


def _check_v3(v):
    if v["template"] is None and v["reply_to"] is None:
        raise DecodeError("Invalid", "V3 content without template or reply_to")


ContentV1 = Struct(**_V1)
ContentV2 = Struct(check=_check_v2, **_V2)
ContentV3 = Struct(check=_check_v3, **_V3)
EventContent = Enum(("None", None), ("V1", ContentV1), ("V2", ContentV2), ("V3", ContentV3))

Direction = Enum(("Inbound", Struct(channel=Channel)), ("Outbound", None))
Status = Enum(("Open", None), ("Pending", None), ("Snoozed", Struct(until=U64)), ("Resolved", None))
ReceiptKind = Enum(("Failed", None), ("Delivered", None), ("Read", None))
ThreadKind = Enum(
    ("Opened", Struct(org=KEY, contact=CID, channel=Channel)),
    ("Message", Struct(direction=Direction)),
    ("Note", None),
    ("Assign", Struct(assignee=Opt(CID))),
    ("Status", Struct(status=Status)),
    ("HandOff", Struct(channel=Channel)),
    ("Receipt", Struct(target=ID, channel=Channel, receipt=ReceiptKind)),
    ("Read", Struct(up_to=ID)),
    ("LabelAdd", Struct(label=SHORT)),
    ("LabelRemove", Struct(label=SHORT)),
    ("MemberAdd", Struct(org=KEY)),
    ("MemberRemove", Struct(org=KEY)),
    ("Erase", Struct(targets=Vec(ID))),
    ("AutoReply", Struct(channel=Channel)),
    ("AssignTeam", Struct(team=Opt(SHORT))))
DirectoryKind = Enum(
    ("Genesis", None),
    ("Certify", Struct(certificate=Certificate)),
    ("Revoke", Struct(subject=KEY, effective_from=U64)),
    ("CreateContact", Struct(contact=CID)),
    ("LinkHandle", Struct(contact=CID)),
    ("UnlinkHandle", Struct(contact=CID)),
    ("Merge", Struct(**{"from": CID, "into": CID})),
    ("SetAttribute", Struct(contact=CID, key=SHORT)),
    ("Consent", Struct(contact=CID, channel=Opt(Channel), granted=BOOL)),
    ("EraseContact", Struct(contact=CID)),
    ("SetCannedReply", Struct(shortcode=SHORT)),
    ("SetTeam", Struct(team=SHORT, members=Vec(CID))),
    ("SetWebhook", Struct(name=SHORT)))
EventKind = Enum(("Thread", ThreadKind), ("Directory", DirectoryKind))
Scope = Enum(("Directory", KEY), ("NewThread", None), ("Thread", ID))
EventHeader = Struct(scope=Scope, parents=Vec(ID), depth=U64, author=KEY, agent=Opt(CID),
                     author_time=U64, kind=EventKind, content_hash=Opt(ID))
SignedHeader = Struct(header=EventHeader, signature=SIG)
Event = Struct(signed=SignedHeader, content=EventContent)

# §9
JOIN_SECRET = Fixed(32)  # raw bytes, not an id: JSON shows it as numbers
ScopeId = Enum(("Directory", KEY), ("Thread", ID))
ScopeSummary = Struct(scope=ScopeId, n_events=U64, heads_digest=ID)
SyncMessage = Enum(
    ("Summary", Struct(scopes=Vec(ScopeSummary))),
    ("Hello", Struct(certificate=Certificate)),
    ("Want", Struct(scope=ScopeId, have=Vec(ID), from_depth=U64, max_events=U32)),
    ("Events", Struct(scope=ScopeId, events=Vec(Event), complete=BOOL)),
    ("Push", Struct(events=Vec(Event))),
    ("Join", Struct(secret=JOIN_SECRET, bridge_keys=Vec(Tuple(Channel, KEY)))),
    ("Joined", Struct(certificate=Certificate, bridge_certificates=Vec(Certificate))),
    ("Digest", Struct(n_scopes=U64, digest=ID)),
    ("Buckets", Struct(digests=Vec(ID))),
    ("SummaryOf", Struct(buckets=BytesType())),
    ("Certificates", Struct(certificates=Vec(Certificate))),
    ("Ack", None),
    ("Refused", Struct(reason=TEXT)),
    ("WantBlob", Struct(blob=ID, offset=U64)),
    ("Blob", Struct(blob=ID, size=U64, offset=U64, bytes=BytesType())),
    ("NoBlob", Struct(blob=ID)))

# §7 states
Reader_ = Enum(("Customer", None), ("Agent", CID))
Route = Struct(channel=Channel, handle_from=ID)
ThreadState = Struct(
    owner=KEY, contact=CID, opened_on=Channel, opened_at=U64, status=Status, assignee=Opt(CID),
    route=Opt(Route), labels=SetT(SHORT), members=SetT(KEY), read_marks=MapT(Reader_, ID),
    receipts=MapT(ID, ReceiptKind), erased=SetT(ID), n_events=U64, n_messages=U64,
    last_activity=U64, team=Opt(SHORT))
ContactRecord = Struct(
    display_name=Opt(TEXT), merged_into=Opt(CID), merged_from=SetT(CID), handles=SetT(Handle),
    attributes=MapT(TEXT, TEXT), consent=MapT(Opt(Channel), BOOL), erased=BOOL)
DirectoryState = Struct(
    org=KEY, certificates=MapT(KEY, Vec(Certificate)), revocations=MapT(KEY, U64),
    contacts=MapT(CID, ContactRecord), handles=MapT(Handle, CID), n_events=U64,
    canned_replies=MapT(TEXT, TEXT), teams=MapT(TEXT, SetT(CID)), webhooks=MapT(TEXT, TEXT))

LIMIT_EVENT, LIMIT_FRAME, LIMIT_CERT = 262_144, 8_388_608, 4_096


def decode(t, b, limit=None):
    """§2.3 strict decoding: limit, truncation, trailing bytes, invalid values, re-encoding."""
    if limit is not None and len(b) > limit:
        raise DecodeError("TooLarge")
    r = Reader(b)
    v = t.dec(r)
    if r.i != len(b):
        raise DecodeError("TrailingBytes")
    if t.enc(v) != b:
        raise DecodeError("NonCanonical")
    return v


def encode(t, v):
    return t.enc(v)


# ---------------------------------------------------------------- §1 Ed25519

L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
IDENT = (0, 1, 1, 0)


def p_add(a, b):
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    A, B = (y1 - x1) * (y2 - x2) % P, (y1 + x1) * (y2 + x2) % P
    C, DD = 2 * D * t1 * t2 % P, 2 * z1 * z2 % P
    E, F, G, H = B - A, DD - C, DD + C, B + A
    return (E * F % P, G * H % P, F * G % P, E * H % P)


def p_neg(a):
    return (-a[0] % P, a[1], a[2], -a[3] % P)


def p_mul(k, a):
    out = IDENT
    while k:
        if k & 1:
            out = p_add(out, a)
        a, k = p_add(a, a), k >> 1
    return out


def p_is_identity(a):
    return a[0] % P == 0 and (a[1] - a[2]) % P == 0


def p_encode(a):
    zi = pow(a[2], P - 2, P)
    x, y = a[0] * zi % P, a[1] * zi % P
    return (y | (x & 1) << 255).to_bytes(32, "little")


def p_decode(b):
    """Decodes y < p; x = 0 with the sign bit set is decoded to x = 0 (see §1). None if no point."""
    v = int.from_bytes(b, "little")
    y, sign = v & ((1 << 255) - 1), v >> 255
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P:
        return None
    if (x & 1) != sign:
        x = -x % P
    return (x, y, 1, x * y % P)


BASE = p_decode((4 * pow(5, P - 2, P) % P).to_bytes(32, "little"))


def small_order(a):
    return p_is_identity(p_mul(8, a))


def order_divides_4(a):
    return p_is_identity(p_mul(4, a))


def public_key(seed):
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little") & ((1 << 254) - 8) | (1 << 254)
    return p_encode(p_mul(a, BASE))


def sign(seed, msg):
    """RFC 8032 deterministic signing (to reproduce the vectors' signatures)."""
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little") & ((1 << 254) - 8) | (1 << 254)
    A = p_encode(p_mul(a, BASE))
    r = int.from_bytes(hashlib.sha512(h[32:] + msg).digest(), "little") % L
    R = p_encode(p_mul(r, BASE))
    k = int.from_bytes(hashlib.sha512(R + A + msg).digest(), "little") % L
    return R + ((r + k * a) % L).to_bytes(32, "little")


def _prechecks(pub, msg, sig):
    A = p_decode(pub)
    if len(sig) != 64 or A is None or small_order(A):                  # rule 1
        return None
    R = p_decode(sig[:32])
    if R is None or p_encode(R) != sig[:32] or small_order(R):          # rule 2
        return None
    s = int.from_bytes(sig[32:], "little")
    if s >= L:                                                          # rule 3
        return None
    k = int.from_bytes(hashlib.sha512(sig[:32] + pub + msg).digest(), "little") % L
    return A, R, s, k


def verify(pub, msg, sig):
    """§1's acceptance rule: canonical R, s < l, no small-order A or R, cofactored equation."""
    pre = _prechecks(pub, msg, sig)
    if pre is None:
        return False
    A, R, s, k = pre
    t = p_add(p_add(p_mul(s, BASE), p_neg(p_mul(k, A))), p_neg(R))
    return p_is_identity(p_mul(8, t))                                   # rule 4


def verify_cofactorless(pub, msg, sig):
    """What libsodium/OpenSSL-style verifiers check: [s]B == R + [k]A, as encodings."""
    pre = _prechecks(pub, msg, sig)
    if pre is None:
        return False
    A, R, s, k = pre
    return p_encode(p_mul(s, BASE)) == p_encode(p_add(R, p_mul(k, A)))


# ---------------------------------------------------------------- §2.1 JSON (for people)

def to_json(t, v):
    """serde JSON conventions of §2.1 for a value of schema t (returns plain Python data)."""
    if isinstance(t, Enum):
        if t.plain:
            return v
        name, payload = v
        if t is EventContent:  # content: null or the version's fields, without the tag
            return None if name == "None" else to_json(CONTENT_T[name], payload)
        pt = t.variants[t.index[name]][1]
        return name if pt is None else {name: to_json(pt, payload)}
    if isinstance(t, Struct):
        return {n: to_json(ft, v[n]) for n, ft in t.fields}
    if isinstance(t, Opt):
        return None if v is None else to_json(t.t, v)
    if isinstance(t, HandleType):
        return f"{v[0]}:{v[1]}"
    if isinstance(t, Tuple):
        return [to_json(x, y) for x, y in zip(t.ts, v)]
    if isinstance(t, Vec):
        return [to_json(t.t, x) for x in v]
    if isinstance(t, BytesType) or (isinstance(t, Fixed) and t is JOIN_SECRET):
        return list(v)
    if isinstance(t, Fixed):
        return v.hex()
    return v  # ints, bools, strings


# ---------------------------------------------------------------- §4 events

def dom(domain, b=b""):
    return domain.encode() + b"\x00" + b


def sha(domain, b=b""):
    return hashlib.sha256(dom(domain, b)).digest()


CONTENT_T = {"V1": ContentV1, "V2": ContentV2, "V3": ContentV3}
CONTENT_DOMAIN = {"V1": "threadline/content/v1", "V2": "threadline/content/v2",
                  "V3": "threadline/content/v3"}


def content_hash(content):
    """content is an EventContent value; None for ('None', None)."""
    ver, c = content
    if ver == "None":
        return None
    return sha(CONTENT_DOMAIN[ver], CONTENT_T[ver].enc(c))


def event_id(ev):
    return sha("threadline/event-id/v1", SignedHeader.enc(ev["signed"]))


def kind_name(h):
    return h["kind"][1][0]


def kind_fields(h):
    return h["kind"][1][1]


CONTENT_RULE = {"Message": "required", "Note": "required", "HandOff": "required",
                "AutoReply": "required", "LinkHandle": "required", "UnlinkHandle": "required",
                "SetAttribute": "required", "SetCannedReply": "required",
                "SetWebhook": "required", "Opened": "optional", "Receipt": "optional",
                "CreateContact": "optional"}


def verify_event(ev, encoded_len=None):
    """§4.2, in order. Returns None when verified, else a short reason."""
    h = ev["signed"]["header"]
    scope, (family, (kind, f)) = h["scope"][0], h["kind"]
    if not ((scope == "Directory" and family == "Directory")
            or (scope == "NewThread" and kind == "Opened")
            or (scope == "Thread" and family == "Thread" and kind != "Opened")):
        return "ScopeKindMismatch"
    if kind in ("Opened", "Genesis"):
        if h["parents"] or h["depth"] != 0:
            return "BadRoot"
    elif not 1 <= len(h["parents"]) <= 32 or h["depth"] < 1:
        return "BadParents"
    if kind == "Genesis" and (h["author"] != h["scope"][1] or h["author_time"] != 0
                              or h["agent"] is not None or ev["content"][0] != "None"):
        return "BadGenesis"
    if kind == "Certify" and f["certificate"]["body"]["org"] != h["scope"][1]:
        return "CertifyWrongOrg"
    asc = lambda xs: all(a < b for a, b in zip(xs, xs[1:]))
    if not asc(h["parents"]):
        return "ParentsNotAscending"
    if kind == "Erase" and not (1 <= len(f["targets"]) <= 4096 and asc(f["targets"])):
        return "BadEraseTargets"
    if kind == "SetTeam" and not (len(f["members"]) <= 1024 and asc(f["members"])):
        return "BadTeamMembers"
    rule = CONTENT_RULE.get(kind, "forbidden")
    has_hash, content = h["content_hash"] is not None, ev["content"]
    if (rule == "required" and not has_hash) or (rule == "forbidden" and has_hash):
        return "ContentRule"
    if content[0] != "None":
        if not has_hash:
            return "ContentWithoutHash"
        c = content[1]
        extras = c.get("subject") is not None or c.get("original") is not None
        is_msg = kind == "Message"
        outbound = is_msg and f["direction"][0] == "Outbound"
        if len(c["text"].encode()) > 131_072 or len(c["attachments"]) > 32:
            return "ContentTooLarge"
        if any(a["size"] > 33_554_432 for a in c["attachments"] + [c.get("original")] if a):
            return "AttachmentTooLarge"
        if extras and kind not in ("Message", "AutoReply"):
            return "SubjectNotAllowed"
        tpl = c.get("template")
        if tpl is not None and (not outbound or len(tpl["parameters"]) > 32):
            return "TemplateNotAllowed"
        if c.get("reply_to") is not None and not is_msg:
            return "ReplyToNotAllowed"
        chan = None
        if is_msg and not outbound:
            chan = f["direction"][1]["channel"]
        elif kind in ("AutoReply", "HandOff"):
            chan = f["channel"]
        if chan is not None and (c["handle"] is None or c["handle"][0] != chan):
            return "HandleNotOnChannel"
        if kind == "Opened" and c["handle"] is not None and c["handle"][0] != f["channel"]:
            return "HandleNotOnChannel"
        if kind in ("LinkHandle", "UnlinkHandle") and c["handle"] is None:
            return "HandleMissing"
        if content_hash(content) != h["content_hash"]:
            return "ContentHashMismatch"
    n = encoded_len if encoded_len is not None else len(Event.enc(ev))
    if n > LIMIT_EVENT:
        return "TooLarge"
    if not verify(h["author"], dom("threadline/event/v1", EventHeader.enc(h)),
                  ev["signed"]["signature"]):
        return "BadSignature"
    return None


def verify_certificate(cert):
    b = cert["body"]
    return b["not_before"] <= b["not_after"] and verify(
        b["org"], dom("threadline/cert/v1", CertificateBody.enc(b)), cert["signature"])


# ---------------------------------------------------------------- §5 order, §9 digests

def order_key(ev, eid):
    h = ev["signed"]["header"]
    return (h["depth"], h["author_time"], eid)


def linear_order(events):
    """events: {id: event}. Returns the ids in linear order."""
    return sorted(events, key=lambda i: order_key(events[i], i))


def heads(events):
    parents = {p for ev in events.values() for p in ev["signed"]["header"]["parents"]}
    return sorted(i for i in events if i not in parents)


def heads_digest(head_ids):
    return sha("threadline/event-id/v1", b"".join(sorted(head_ids)))


def summaries_digest(summaries):
    s = sorted(summaries, key=lambda x: ScopeId.key(x["scope"]))
    return sha("threadline/sync-digest/v1", b"".join(ScopeSummary.enc(x) for x in s))


def bucket(summary):
    return summary["scope"][1][0]


# ---------------------------------------------------------------- §7.1 thread fold

RECEIPT_RANK = {"Failed": 0, "Delivered": 1, "Read": 2}


def fold_thread(events):
    """events: {id: event} of one thread. Headers only. Returns the ThreadState dict."""
    order = linear_order(events)
    root_id = order[0]
    root = events[root_id]["signed"]["header"]
    o = kind_fields(root)
    st = dict(owner=o["org"], contact=o["contact"], opened_on=o["channel"],
              opened_at=root["author_time"], status=("Open", None), assignee=None,
              route=(dict(channel=o["channel"], handle_from=root_id)
                     if root["content_hash"] is not None else None),
              labels=set(), members={o["org"]}, read_marks={}, receipts={}, erased=set(),
              n_events=1, n_messages=0, last_activity=root["author_time"], team=None)
    for eid in order[1:]:
        h = events[eid]["signed"]["header"]
        kind, f = kind_name(h), kind_fields(h)
        if kind == "Message":
            st["n_messages"] += 1
            if f["direction"][0] == "Inbound":
                st["route"] = dict(channel=f["direction"][1]["channel"], handle_from=eid)
                st["status"] = ("Open", None)
        elif kind == "Assign":
            st["assignee"] = f["assignee"]
        elif kind == "Status":
            st["status"] = f["status"]
        elif kind == "HandOff":
            st["route"] = dict(channel=f["channel"], handle_from=eid)
        elif kind == "Receipt":
            old = st["receipts"].get(f["target"])
            if old is None or RECEIPT_RANK[f["receipt"]] > RECEIPT_RANK[old]:
                st["receipts"][f["target"]] = f["receipt"]
            if f["receipt"] == "Read":
                st["read_marks"][("Customer", None)] = f["target"]
        elif kind == "Read":
            if h["agent"] is not None:
                st["read_marks"][("Agent", h["agent"])] = f["up_to"]
        elif kind == "LabelAdd":
            st["labels"].add(f["label"])
        elif kind == "LabelRemove":
            st["labels"].discard(f["label"])
        elif kind == "MemberAdd":
            st["members"].add(f["org"])
        elif kind == "MemberRemove":
            st["members"].discard(f["org"])
        elif kind == "Erase":
            st["erased"] |= set(f["targets"])
        elif kind == "AssignTeam":
            st["team"] = f["team"]
        st["n_events"] += 1
        st["last_activity"] = max(st["last_activity"], h["author_time"])
    return st


def thread_state_hash(st):
    return sha("threadline/thread-state/v1", ThreadState.enc(st))


# ---------------------------------------------------------------- §7.2 directory fold

def erased_set(events):
    parent = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    erase_targets = []
    for ev in events.values():
        h = ev["signed"]["header"]
        k, f = kind_name(h), kind_fields(h)
        if k == "Merge":
            parent[find(f["from"])] = find(f["into"])
        elif k == "EraseContact":
            erase_targets.append(f["contact"])
    roots = {find(c) for c in erase_targets}
    return {c for c in list(parent) if find(c) in roots} | set(erase_targets)


def fold_directory(events):
    order = linear_order(events)
    org = events[order[0]]["signed"]["header"]["scope"][1]
    erased = erased_set(events)
    st = dict(org=org, certificates={}, revocations={}, contacts={}, handles={}, n_events=1,
              canned_replies={}, teams={}, webhooks={})
    contacts, handles = st["contacts"], st["handles"]

    def root(c):
        while c in contacts and contacts[c]["merged_into"] is not None:
            c = contacts[c]["merged_into"]
        return c

    live = lambda c: c in contacts and not contacts[c]["erased"]

    def resolves(h):
        return root(handles[h]) if h in handles and live(root(handles[h])) else None

    for eid in order[1:]:
        ev = events[eid]
        h = ev["signed"]["header"]
        k, f = kind_name(h), kind_fields(h)
        st["n_events"] += 1
        c = ev["content"][1] if ev["content"][0] != "None" else None
        if k in ("CreateContact", "LinkHandle", "UnlinkHandle", "SetAttribute") \
                and f["contact"] in erased:
            c = None
        if k == "Certify":
            cert = f["certificate"]
            lst = st["certificates"].setdefault(cert["body"]["subject"], [])
            if cert not in lst:
                lst.append(cert)
        elif k == "Revoke":
            s = f["subject"]
            st["revocations"][s] = min(st["revocations"].get(s, f["effective_from"]),
                                       f["effective_from"])
        elif k == "CreateContact":
            if f["contact"] not in contacts:
                contacts[f["contact"]] = dict(
                    display_name=c["text"] if c and c["text"] else None, merged_into=None,
                    merged_from=set(), handles=set(), attributes={}, consent={},
                    erased=f["contact"] in erased)
        elif k == "LinkHandle":
            if c is None or c["handle"] is None:
                continue
            hd, r = c["handle"], root(f["contact"])
            if not live(r) or resolves(hd) is not None:
                continue
            handles[hd] = r
            contacts[r]["handles"].add(hd)
        elif k == "UnlinkHandle":
            if c is None or c["handle"] is None:
                continue
            hd, r = c["handle"], root(f["contact"])
            if resolves(hd) is not None and resolves(hd) == r:
                del handles[hd]
                contacts[r]["handles"].discard(hd)
        elif k == "Merge":
            fr, into = root(f["from"]), root(f["into"])
            if fr == into or fr not in contacts or into not in contacts:
                continue
            F, I = contacts[fr], contacts[into]
            fh, fmf, fa, fc = F["handles"], F["merged_from"], F["attributes"], F["consent"]
            F.update(merged_into=into, handles=set(), merged_from=set(), attributes={},
                     consent={})
            for hd in fh:
                handles[hd] = into
            I["handles"] |= fh
            I["merged_from"] |= {fr} | fmf
            for key, val in fa.items():
                I["attributes"].setdefault(key, val)
            for key, val in fc.items():
                I["consent"].setdefault(key, val)
            if I["display_name"] is None:
                I["display_name"] = F["display_name"]
            I["erased"] = I["erased"] or F["erased"]
        elif k == "SetAttribute":
            r = root(f["contact"])
            if c is None or not live(r):
                continue
            if c["text"]:
                contacts[r]["attributes"][f["key"]] = c["text"]
            else:
                contacts[r]["attributes"].pop(f["key"], None)
        elif k == "Consent":
            r = root(f["contact"])
            if r in contacts:
                contacts[r]["consent"][f["channel"]] = f["granted"]
        elif k == "EraseContact":
            r = root(f["contact"])
            targets = [r] + sorted(contacts[r]["merged_from"]) if r in contacts else [r]
            for x in targets:
                if x in contacts:
                    contacts[x].update(erased=True, display_name=None, handles=set(),
                                       attributes={})
            for hd in [hd for hd, owner in handles.items() if owner in erased]:
                del handles[hd]
        elif k in ("SetCannedReply", "SetWebhook"):
            if c is None:
                continue
            tgt = st["canned_replies" if k == "SetCannedReply" else "webhooks"]
            name = f["shortcode" if k == "SetCannedReply" else "name"]
            if c["text"]:
                tgt[name] = c["text"]
            else:
                tgt.pop(name, None)
        elif k == "SetTeam":
            if f["members"]:
                st["teams"][f["team"]] = set(f["members"])
            else:
                st["teams"].pop(f["team"], None)
    return st


def directory_state_hash(st):
    return sha("threadline/directory-state/v1", DirectoryState.enc(st))


# ---------------------------------------------------------------- §6 auth rules

# Refusals are named as §6's table names them (the reference's DagError/AuthError variants).
# Retryable: MissingParents, FromTheFuture, UnknownAuthor; every other refusal is final.
RETRYABLE = ("MissingParents", "FromTheFuture", "UnknownAuthor")
SKEW = 300_000
BRIDGE_KINDS = ("AutoReply", "Receipt")
DUPLICATE = "Duplicate"  # not a refusal: the event is already stored, a no-op


def is_inbound(kind, f):
    return kind == "Message" and f["direction"][0] == "Inbound"


def kind_channel(kind, f):
    """The channel a bridge kind names: Message{Inbound{c}}, AutoReply{c}, Receipt{channel: c}."""
    if kind == "Message":
        return f["direction"][1]["channel"] if f["direction"][0] == "Inbound" else None
    return f.get("channel")


def add_revocation(revocations, key, effective_from):
    """§7.2 Revoke row: the earliest effective_from wins."""
    old = revocations.get(key)
    revocations[key] = effective_from if old is None else min(old, effective_from)


def author_steps(certs_of_key, revocations, key, t):
    """§6 rule 2, the thread's author steps after the clock: UnknownAuthor, Revoked (of the
    key, before any window), CertificateNotValid. Returns (error, certificate): the certificate
    is the first of the key's list valid at t (it gives the org and the role)."""
    if not certs_of_key:
        return "UnknownAuthor", None
    rev = revocations.get(key)
    if rev is not None and rev <= t:
        return "Revoked", None
    for c in certs_of_key:
        b = c["body"]
        if b["not_before"] <= t <= b["not_after"]:
            return None, c
    return "CertificateNotValid", None


class Log:
    """§5 and the `log` steps of §6's table, shared by threads and directories."""

    def __init__(self, now):
        self.now = now
        self.events = {}
        self.root = None  # the root's id once stored
        self.last = None  # outcome of the last judge(): "Inserted", "Duplicate" or a refusal

    def scope(self):
        raise NotImplementedError

    def is_root_kind(self, kind):
        raise NotImplementedError

    def log_steps(self, ev, eid):
        """WrongScope, Duplicate (a no-op), NotARoot, MissingParents, BadDepth, or None."""
        h = ev["signed"]["header"]
        if self.root is None:
            # An empty log takes only its root (§6, after the table).
            if not self.accepts_scope_when_empty(h["scope"]):
                return "WrongScope"
            if h["parents"] or not self.is_root_kind(kind_name(h)):
                return "NotARoot"
            return None
        if h["scope"] != self.scope():
            return "WrongScope"
        if eid in self.events:
            return DUPLICATE
        if not h["parents"]:
            return "NotARoot"
        if any(p not in self.events for p in h["parents"]):
            return "MissingParents"
        if h["depth"] != 1 + max(self.events[p]["signed"]["header"]["depth"]
                                 for p in h["parents"]):
            return "BadDepth"
        return None

    def ancestors(self, parents):
        """Strict ancestors of an event with these parents (§6 rule 4): parents and up."""
        seen, stack = set(), list(parents)
        while stack:
            p = stack.pop()
            if p not in seen:
                seen.add(p)
                stack.extend(self.events[p]["signed"]["header"]["parents"])
        return seen

    def in_order(self, ids):
        return sorted(ids, key=lambda i: order_key(self.events[i], i))

    def judge(self, ev):
        """None: accepted and stored, or already stored (a no-op, `self.last` == "Duplicate",
        SPEC_GAPS 22); else the refusal's name. Verification (§4.2) comes first."""
        why = verify_event(ev)
        if why:
            self.last = "NotVerified:" + why
            return self.last
        eid = event_id(ev)
        err = self.log_steps(ev, eid)
        if err == DUPLICATE:
            self.last = DUPLICATE
            return None
        if err is None:
            err = self.auth_steps(ev, eid)
        if err is None:
            self.events[eid] = ev
            if self.root is None:
                self.root = eid
            self.stored(ev, eid)
            self.last = "Inserted"
            return None
        self.last = err
        return err

    def stored(self, ev, eid):
        pass


class ThreadAuth(Log):
    """One thread's judge (§6 rules 1-5, table rows `log` and `thread`).

    certificates: the receiver's own directory's, in the order it added them; partner
    certificates are used only for a key with none there; revocations: {key: effective_from},
    the receiver's own directory's. The log starts empty: its first event must be the root."""

    def __init__(self, certificates, now, revocations=None, partner_certificates=()):
        super().__init__(now)
        self.certs = [c for c in certificates if verify_certificate(c)]
        self.partner = [c for c in partner_certificates if verify_certificate(c)]
        self.revocations = dict(revocations or {})

    def scope(self):
        return ("Thread", self.root)

    def accepts_scope_when_empty(self, scope):
        # Before its root, a thread log is the one its events name (Thread(id)) or the one a
        # NewThread opens: a thread event first is NotARoot, not WrongScope (SPEC_GAPS 21).
        return scope[0] in ("NewThread", "Thread")

    def is_root_kind(self, kind):
        return kind == "Opened"

    def certs_of(self, key):
        own = [c for c in self.certs if c["body"]["subject"] == key]
        return own or [c for c in self.partner if c["body"]["subject"] == key]

    def auth_steps(self, ev, eid):
        h = ev["signed"]["header"]
        kind, f = kind_name(h), kind_fields(h)
        t = h["author_time"]
        # thread: author (rules 1, 2)
        if t > self.now + SKEW:
            return "FromTheFuture"
        err, cert = author_steps(self.certs_of(h["author"]), self.revocations, h["author"], t)
        if err:
            return err
        org, (role, rf) = cert["body"]["org"], cert["body"]["role"]
        inbound = is_inbound(kind, f)
        content = ev["content"][1] if ev["content"][0] != "None" else None
        # thread: role (rule 3)
        if role == "Bridge":
            if h["agent"] is not None:
                return "AgentMismatch"
            if not (inbound or kind in BRIDGE_KINDS):
                return "KindNotAllowed"
            if (inbound or kind == "AutoReply") and content is not None \
                    and rf["handle_scope"] is not None and content["handle"] != rf["handle_scope"]:
                return "HandleOutOfScope"
            if kind_channel(kind, f) != rf["channel"]:
                return "WrongChannel"
        else:
            if inbound or kind in BRIDGE_KINDS or (role == "Agent" and kind == "Opened"):
                return "KindNotAllowed"
            if role == "Agent" and h["agent"] != rf["agent"]:
                return "AgentMismatch"
        # thread: Opened, the root (rule 4); nothing after this
        if kind == "Opened":
            return None if f["org"] == org else "WrongOrg"
        # thread: other events (rule 4), on the causal past
        anc = self.ancestors(h["parents"])
        owner = kind_fields(self.events[self.root]["signed"]["header"])["org"]
        members = {owner}
        for i in self.in_order(anc):
            a = self.events[i]["signed"]["header"]
            if kind_name(a) == "MemberAdd":
                members.add(kind_fields(a)["org"])
            elif kind_name(a) == "MemberRemove":
                members.discard(kind_fields(a)["org"])
        if org not in members:
            return "NotAMember"
        if kind in ("MemberAdd", "MemberRemove", "Erase") and org != owner:
            return "NotOwner"
        if kind == "MemberRemove" and f["org"] == owner:
            return "CannotRemoveOwner"
        if role != "Bridge":
            return None
        # rule 5: bridges stay on their channel's threads
        if org != owner:
            return "NotOwner"
        c = kind_channel(kind, f)
        if kind in ("Message", "AutoReply"):
            admitted = {kind_fields(self.events[i]["signed"]["header"])["channel"] for i in anc
                        if kind_name(self.events[i]["signed"]["header"]) in ("Opened", "HandOff")}
            return None if c in admitted else "ChannelNotAdmitted"
        if f["target"] not in h["parents"]:
            return "ReceiptTargetNotParent"
        tgt = self.events[f["target"]]["signed"]["header"]
        if kind_name(tgt) != "Message" or kind_fields(tgt)["direction"][0] != "Outbound":
            return "ReceiptTargetNotOutbound"
        return None if self.route_as_of(f["target"]) == c else "ReceiptNotOnRoute"

    def route_as_of(self, eid):
        """The channel of the latest route-setting event among eid's strict ancestors."""
        route = None
        for i in self.in_order(self.ancestors(self.events[eid]["signed"]["header"]["parents"])):
            a = self.events[i]["signed"]["header"]
            k, af = kind_name(a), kind_fields(a)
            if k == "Opened" and a["content_hash"] is not None:
                route = af["channel"]
            elif k == "Message" and af["direction"][0] == "Inbound":
                route = af["direction"][1]["channel"]
            elif k == "HandOff":
                route = af["channel"]
        return route


class DirectoryAuth(Log):
    """Org `org`'s directory judge (§6 rules 1-3, table rows `log` and `directory`).

    Judged by the certificates and revocations published in this directory only: it learns
    them from the Certify and Revoke events it accepts (an equal certificate once, in the
    order accepted; a key's earliest effective_from)."""

    def __init__(self, org, now):
        super().__init__(now)
        self.org = org
        self.certs = {}        # subject -> [Certificate], in the order their Certify was added
        self.revocations = {}  # subject -> effective_from

    def scope(self):
        return ("Directory", self.org)

    def accepts_scope_when_empty(self, scope):
        return scope == ("Directory", self.org)

    def is_root_kind(self, kind):
        return kind == "Genesis"

    def auth_steps(self, ev, eid):
        h = ev["signed"]["header"]
        kind, f = kind_name(h), kind_fields(h)
        if kind == "Genesis":
            return None  # not judged (§4.2 rule 1 fixes it)
        if kind == "Certify" and not verify_certificate(f["certificate"]):
            return "BadCertificate"
        t, author = h["author_time"], h["author"]
        if t > self.now + SKEW:
            return "FromTheFuture"
        if author == self.org:
            return None
        if kind == "Certify" and f["certificate"]["body"]["subject"] == author:
            cert = f["certificate"]  # proves itself: no window, no revocation
        else:
            err, cert = author_steps(self.certs.get(author, []), self.revocations, author, t)
            if err:
                return err
        org, (role, rf) = cert["body"]["org"], cert["body"]["role"]
        if org != self.org:  # cannot fail: §4.2 ForeignCertificate (SPEC_GAPS 23)
            return "WrongOrg"
        if role == "Bridge" or kind in ("Revoke", "Genesis"):
            return "KindNotAllowed"
        if role == "Agent" and h["agent"] != rf["agent"]:
            return "AgentMismatch"
        return None

    def stored(self, ev, eid):
        h = ev["signed"]["header"]
        kind, f = kind_name(h), kind_fields(h)
        if kind == "Certify":
            c = f["certificate"]
            lst = self.certs.setdefault(c["body"]["subject"], [])
            if c not in lst:
                lst.append(c)
        elif kind == "Revoke":
            add_revocation(self.revocations, f["subject"], f["effective_from"])
