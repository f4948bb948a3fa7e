"""The objects a hook receives: request, session, response, and replies.

They follow Tyk's coprocess objects field by field, so Tyk plugins run
unchanged. Each object remembers what it was built from and reports only
what a hook changed (``_changes``); an object no hook touched costs nothing
to report.
"""

from __future__ import annotations

# Annotations are never evaluated (see the __future__ import): the typing
# module, two megabytes in every worker, is imported by type checkers only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

Headers = list  # of [name, value] pairs

_canonical_cache: Dict[str, str] = {}
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789"
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def canonical_header(name: str) -> str:
    """Go's canonical header form ("x-api-key" -> "X-Api-Key"), which is how
    Tyk hands header names to plugins. Names with characters outside an HTTP
    token stay as they are, as in Go."""
    c = _canonical_cache.get(name)
    if c is None:
        if name and all(ch in _TOKEN_CHARS for ch in name):
            c = "-".join(p[:1].upper() + p[1:].lower() for p in name.split("-"))
        else:
            c = name
        if len(_canonical_cache) < 4096:
            _canonical_cache[name] = c
    return c


def _first_values(pairs: Iterable) -> Dict[str, str]:
    """Header pairs -> {canonical name: first value}, like Tyk's maps."""
    out: Dict[str, str] = {}
    for name, value in pairs:
        c = canonical_header(name)
        if c not in out:
            out[c] = value
    return out


def _header_changes(pairs: Headers, orig: Dict[str, str],
                    current: Optional[Dict[str, Any]],
                    deletes: Iterable[str] = (),
                    sets: Optional[Dict[str, Any]] = None) -> Optional[Headers]:
    """The new header list, or None when it is unchanged.

    CURRENT is the dict a hook may have edited (None if never built). Then,
    in Tyk's order, DELETES are removed and SETS replace or add. Untouched
    headers keep their original spelling, order and duplicates."""
    # canonical name -> (name, value) to put in, or None to remove
    change: Dict[str, Optional[Tuple[str, str]]] = {}
    if current is not None and current != orig:
        cur = {canonical_header(k): (k, v) for k, v in current.items()}
        for c, v in orig.items():
            if c not in cur:
                change[c] = None
            elif cur[c][1] != v:
                change[c] = cur[c]
        for c, kv in cur.items():
            if c not in orig:
                change[c] = kv
    for name in deletes:
        change[canonical_header(name)] = None
    if sets:
        for name, value in sets.items():
            change[canonical_header(name)] = (name, value)
    if not change:
        return None

    out: Headers = []
    done = set()
    for name, value in pairs:
        c = canonical_header(name)
        if c not in change:
            out.append([name, value])
        elif c not in done:
            done.add(c)
            kv = change[c]
            if kv is not None:
                out.append(_header(kv[0], kv[1]))
    for c, kv in change.items():
        if kv is not None and c not in done:
            out.append(_header(kv[0], kv[1]))
    return out


class Header:
    """One response header with all its values: an entry of
    `response.multivalue_headers` (Tyk's coprocess Header)."""

    __slots__ = ("key", "values")

    def __init__(self, key: str = "", values: Iterable = ()) -> None:
        self.key = key
        self.values: List[str] = _values(values)

    def __repr__(self) -> str:
        return f"Header({self.key!r}, {self.values!r})"


def _values(values: Any) -> List[str]:
    """A header's values as a new list; one string is one value."""
    return [values] if isinstance(values, str) else list(values)


class HeaderList(list):
    """`response.multivalue_headers`: a list of Header. `add()` appends one,
    as on Tyk's protobuf field."""

    def add(self, key: str = "", values: Iterable = ()) -> Header:
        h = Header(key, values)
        self.append(h)
        return h


def _grouped(pairs: Iterable) -> Dict[str, List[str]]:
    """Header pairs -> {canonical name: [values]}, in the order first seen."""
    out: Dict[str, List[str]] = {}
    for name, value in pairs:
        out.setdefault(canonical_header(name), []).append(value)
    return out


def _multivalue_changes(pairs: Headers, orig: Dict[str, str],
                        current: Dict[str, Any],
                        multi: Optional[Iterable[Header]]) -> Optional[Headers]:
    """The new response header list, or None when it is unchanged.

    Tyk's rules for a response: the `headers` dict decides which names stay
    and, where a hook changed it, the first value; MULTI (the hook's
    `multivalue_headers`, None if never built) holds every value. A name
    whose dict entry the hook left alone keeps what MULTI says for it.
    Unchanged names keep their original spelling, order and pairs."""
    if multi is None and current == orig:
        return None
    before = _grouped(pairs)
    # canonical name -> [name to write, values]
    final: Dict[str, list] = {}
    if multi is None:
        final = {c: [c, list(v)] for c, v in before.items()}
    else:
        for h in multi:
            c = canonical_header(str(h.key))
            if c in final:
                final[c][1].extend(_values(h.values))
            else:
                final[c] = [str(h.key), _values(h.values)]
    cur = {canonical_header(k): (k, v) for k, v in current.items()}
    for c in orig:
        if c not in cur:
            final.pop(c, None)
    for c, (k, v) in cur.items():
        if orig.get(c) == v:
            continue
        entry = final.get(c)
        if entry and entry[1]:
            entry[1][0] = v
        else:
            final[c] = [k, [v]]
    if {c: vals for c, (_, vals) in final.items() if vals} == before:
        return None

    out: Headers = []
    done = set()
    for name, value in pairs:
        c = canonical_header(name)
        if c in final and final[c][1] == before[c]:
            out.append([name, value])
        elif c not in done:
            done.add(c)
            if c in final:
                out.extend(_header(final[c][0], v) for v in final[c][1])
    for c, (name, vals) in final.items():
        if c not in before:
            out.extend(_header(name, v) for v in vals)
    return out


_BAD_IN_HEADERS = ("\r", "\n", "\0")


def _header(name: Any, value: Any) -> list:
    """A [name, value] pair a hook set, checked: a CR or LF in it would let
    a hook split the message it is forwarded in."""
    name, value = str(name), str(value)
    if not name or not all(c in _TOKEN_CHARS for c in name):
        raise ValueError(f"invalid header name {name!r}")
    if any(b in value for b in _BAD_IN_HEADERS):
        raise ValueError(f"header {name}: the value contains CR, LF or NUL")
    return [name, value]


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return str(value).encode("utf-8", "surrogateescape")


class ReturnOverrides:
    """Tyk's return_overrides: a non-zero response_code answers the client
    at once with response_body (or response_error) and headers."""

    __slots__ = ("response_code", "response_error", "headers",
                 "response_body", "override_error")

    def __init__(self) -> None:
        self.response_code = 0
        self.response_error = ""
        self.headers: Dict[str, str] = {}
        self.response_body = ""
        self.override_error = False


class RequestObject:
    """Tyk's MiniRequestObject: what `request.object` holds."""

    def __init__(self, req: dict) -> None:
        self._req = req
        self._orig_headers = _first_values(req.get("headers") or ())
        self.headers: Dict[str, str] = dict(self._orig_headers)
        self.set_headers: Dict[str, str] = {}
        self.delete_headers: List[str] = []
        self.url: str = req.get("path") or "/"
        self.request_uri: str = self.url
        self.method: str = req.get("method") or "GET"
        self.scheme: str = req.get("scheme") or "http"
        self.remote_addr: str = req.get("remote_addr") or ""
        self.add_params: Dict[str, str] = {}
        self.delete_params: List[str] = []
        self.extended_params: Dict[str, str] = {}
        self.return_overrides = ReturnOverrides()
        self._params: Optional[Dict[str, str]] = None
        self._orig_params: Optional[Dict[str, str]] = None
        self._body: Optional[str] = None
        self._raw_body: Optional[bytes] = None

    # Query parameters and bodies are built on first use: most hooks never
    # look at them.
    @property
    def params(self) -> Dict[str, str]:
        if self._params is None:
            from urllib.parse import parse_qsl
            query = self.request_uri.partition("?")[2]
            self._orig_params = {}
            for k, v in parse_qsl(query, keep_blank_values=True):
                self._orig_params.setdefault(k, v)
            self._params = dict(self._orig_params)
        return self._params

    @params.setter
    def params(self, value: Dict[str, str]) -> None:
        self.params  # remember the original first
        self._params = dict(value)

    @property
    def raw_body(self) -> bytes:
        if self._raw_body is None:
            return self._req.get("body") or b""
        return self._raw_body

    @raw_body.setter
    def raw_body(self, value: Union[bytes, str]) -> None:
        self._raw_body = _to_bytes(value)
        self._body = None

    @property
    def body(self) -> str:
        if self._body is None:
            return self.raw_body.decode("utf-8", "surrogateescape")
        return self._body

    @body.setter
    def body(self, value: Union[bytes, str]) -> None:
        if isinstance(value, (bytes, bytearray, memoryview)):
            self.raw_body = value
        else:
            self._body = str(value)
            self._raw_body = None

    def _new_path(self) -> Optional[str]:
        params_changed = (self._params is not None
                          and self._params != self._orig_params)
        if not (params_changed or self.add_params or self.delete_params):
            return self.url if self.url != self.request_uri else None

        from urllib.parse import parse_qsl, urlencode
        base, _, query = self.url.partition("?")
        pairs = parse_qsl(query, keep_blank_values=True)
        if params_changed:
            pairs = _apply_dict(pairs, self._orig_params or {}, self._params)
        drop = set(self.delete_params)
        pairs = [p for p in pairs if p[0] not in drop]
        for k, v in self.add_params.items():
            pairs = [p for p in pairs if p[0] != k] + [(k, str(v))]
        return base + ("?" + urlencode(pairs) if pairs else "")

    def _new_body(self) -> Optional[bytes]:
        orig = self._req.get("body") or b""
        if self._raw_body is not None:
            return self._raw_body if self._raw_body != orig else None
        if self._body is not None:
            new = self._body.encode("utf-8", "surrogateescape")
            return new if new != orig else None
        return None

    def _changes(self) -> Optional[dict]:
        out = {}
        if self.method != (self._req.get("method") or "GET"):
            method = str(self.method)
            if not method or not all(c in _TOKEN_CHARS for c in method):
                raise ValueError(f"invalid method {method!r}")
            out["method"] = method
        path = self._new_path()
        if path is not None:
            path = str(path)
            if not path.startswith("/") or any(
                    c in path for c in " \t\r\n\0"):
                raise ValueError(f"invalid path {path!r}: it must start "
                                 f"with / and hold no blank or control "
                                 f"character")
            out["path"] = path
        headers = _header_changes(self._req.get("headers") or (),
                                  self._orig_headers, self.headers,
                                  self.delete_headers, self.set_headers)
        if headers is not None:
            out["headers"] = headers
        body = self._new_body()
        if body is not None:
            out["body"] = body
        return out or None


def _apply_dict(pairs: list, orig: Dict[str, str],
                cur: Dict[str, str]) -> list:
    """Apply edits of a first-value dict to the (key, value) list it came
    from: removed keys go, changed keys keep one pair, new keys append."""
    out = []
    seen = set()
    for k, v in pairs:
        if k not in cur:
            continue
        if cur[k] == orig.get(k):
            out.append((k, v))
        elif k not in seen:
            seen.add(k)
            out.append((k, str(cur[k])))
    for k, v in cur.items():
        if k not in orig:
            out.append((k, str(v)))
    return out


class Request:
    """The request a hook sees: Tyk's helpers plus `.object`.

    `.object` is built the first time anything asks for it, so a hook that
    only passes the request along adds no work."""

    __slots__ = ("_req", "_obj")

    def __init__(self, req: dict) -> None:
        self._req = req
        self._obj: Optional[RequestObject] = None

    @property
    def object(self) -> RequestObject:
        if self._obj is None:
            self._obj = RequestObject(self._req)
        return self._obj

    def add_header(self, key: str, value: str) -> None:
        self.object.set_headers[key] = value

    def delete_header(self, key: str) -> None:
        self.object.delete_headers.append(key)

    def add_param(self, key: str, value: str) -> None:
        self.object.add_params[key] = value

    def delete_param(self, key: str) -> None:
        self.object.delete_params.append(key)

    def get_header(self, key: str) -> Optional[str]:
        if self._obj is None:
            want = canonical_header(key)
            for name, value in self._req.get("headers") or ():
                if canonical_header(name) == want:
                    return value
            return None
        headers = self._obj.headers
        if key in headers:
            return headers[key]
        return headers.get(canonical_header(key))

    def _changes(self) -> Optional[dict]:
        return None if self._obj is None else self._obj._changes()

    def _override(self) -> Optional["Reply"]:
        """The reply asked for through return_overrides, if any."""
        if self._obj is None:
            return None
        ro = self._obj.return_overrides
        if not ro.response_code:
            return None
        return Reply(int(ro.response_code),
                     ro.response_body or ro.response_error,
                     dict(ro.headers))


class Session:
    """Tyk's SessionState. As Tyk does, sluice applies what auth_check
    leaves in it: `is_inactive` and `expires` (a Unix time; 0 never), and
    `rate` per `per` seconds and `quota_max` per `quota_renewal_rate`
    seconds for the key in metadata["token"]. The other fields are carried
    for hooks to read and set; metadata carries what auth_check found."""

    last_check = 0
    allowance = 0.0
    rate = 0.0
    per = 0.0
    expires = 0
    quota_max = 0
    quota_renews = 0
    quota_remaining = 0
    quota_renewal_rate = 0
    org_id = ""
    oauth_client_id = ""
    hmac_enabled = False
    hmac_secret = ""
    is_inactive = False
    apply_policy_id = ""
    data_expires = 0
    enable_detailed_recording = False
    alias = ""
    last_updated = ""
    id_extractor_deadline = 0
    session_lifetime = 0
    certificate = ""
    max_query_depth = 0

    def __init__(self) -> None:
        self.metadata: Dict[str, Any] = {}

    # The other containers are made on first use, per session.
    _LAZY = {"access_rights": dict, "oauth_keys": dict, "basic_auth_data":
             dict, "jwt_data": dict, "monitor": dict, "tags": list,
             "apply_policies": list}

    def __getattr__(self, name: str) -> Any:
        make = Session._LAZY.get(name)
        if make is None:
            raise AttributeError(name)
        value = make()
        setattr(self, name, value)
        return value


class Response:
    """The upstream's response, for response hooks (Tyk's ResponseObject)."""

    def __init__(self, resp: dict) -> None:
        self._resp = resp
        self.status_code: int = int(resp.get("status") or 200)
        self._orig_headers = _first_values(resp.get("headers") or ())
        self.headers: Dict[str, str] = dict(self._orig_headers)
        self._multi: Optional[HeaderList] = None
        self._body: Optional[str] = None
        self._raw_body: Optional[bytes] = None

    @property
    def multivalue_headers(self) -> HeaderList:
        """Every header with all its values (a Set-Cookie per cookie), built
        when a hook first asks."""
        if self._multi is None:
            self._multi = HeaderList(
                Header(c, v) for c, v in
                _grouped(self._resp.get("headers") or ()).items())
        return self._multi

    @multivalue_headers.setter
    def multivalue_headers(self, value: Iterable) -> None:
        self._multi = HeaderList(
            h if isinstance(h, Header) else Header(*h) for h in value)

    raw_body = RequestObject.raw_body
    body = RequestObject.body

    @property
    def _req(self) -> dict:
        # Lets the body properties shared with RequestObject find the
        # original body.
        return self._resp

    _new_body = RequestObject._new_body

    def _changes(self) -> Optional[dict]:
        out = {}
        if self.status_code != int(self._resp.get("status") or 200):
            out["status"] = int(self.status_code)
        headers = _multivalue_changes(self._resp.get("headers") or (),
                                      self._orig_headers, self.headers,
                                      self._multi)
        if headers is not None:
            out["headers"] = headers
        body = self._new_body()
        if body is not None:
            out["body"] = body
        return out or None


class Reply(Exception):
    """An answer sent to the client at once; see sluice.reply()."""

    def __init__(self, status: int, body: Any = b"",
                 headers: Union[Dict[str, str], Iterable, None] = None):
        super().__init__(status)
        self.status = int(status)
        self.body = body
        self.headers = headers

    def _encode(self) -> dict:
        if isinstance(self.headers, dict):
            headers = [_header(k, v) for k, v in self.headers.items()]
        else:
            headers = [_header(k, v) for k, v in self.headers or ()]
        body = self.body
        if isinstance(body, (dict, list)):
            import json
            body = json.dumps(body)
            if not any(k.lower() == "content-type" for k, _ in headers):
                headers.append(["Content-Type", "application/json"])
        body = b"" if body is None else _to_bytes(body)
        return {"status": self.status, "headers": headers, "body": body}
