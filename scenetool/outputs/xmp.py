"""XMP sidecars: scenetool's label as keywords that photo managers read, merged into what is there.

The label goes into `dc:subject` and, as `scenes|<label>`, into `lr:hierarchicalSubject`
(the two that digiKam, darktable, Lightroom and PhotoPrism read); the confidence, the model's
sha256 and the keywords scenetool itself added go into scenetool's own namespace. Keeping
that list means a later tag replaces exactly scenetool's keywords and `--remove` takes exactly
those out: a keyword the user had already (even the same word) is never claimed or removed,
and every other property of the sidecar survives untouched.

Sidecars are parsed with lxml with entities, DTDs and the network off; one with a DTD is
refused (XMP has none), so nothing in a file we did not write is ever expanded or fetched.
A sidecar that cannot be parsed is left exactly as it is. Writes are atomic
(`fsutil.write_bytes`); the photo itself is only ever named, never opened.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

from lxml import etree

from scenetool.errors import SidecarError
from scenetool.fsutil import write_bytes

X = "adobe:ns:meta/"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
DC = "http://purl.org/dc/elements/1.1/"
LR = "http://ns.adobe.com/lightroom/1.0/"
SCENETOOL = "http://ns.scenetool.local/xmp/1.0/"
PREFIXES = {"x": X, "rdf": RDF, "dc": DC, "lr": LR, "scenetool": SCENETOOL}
HIERARCHY_ROOT = "scenes"
NAMINGS = ("ext", "stem")
# scenetool's own properties: which keywords it added, and what it knew when it added them.
OWN_SUBJECT = "subject"
OWN_HIERARCHICAL = "hierarchicalSubject"
PROPERTIES = ("label", "confidence", "modelSha256")


class Outcome(enum.Enum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    REMOVED = "removed"  # scenetool's keywords taken out, the rest kept
    DELETED = "deleted"  # held scenetool's keywords only: the file is gone
    ABSENT = "no sidecar"  # nothing to remove or to write


@dataclass(frozen=True)
class Tag:
    """What scenetool writes for one photo."""

    label: str
    confidence: float
    model_sha256: str

    def keywords(self) -> tuple[str, str]:
        """(the dc:subject keyword, the lr:hierarchicalSubject keyword)."""
        return self.label, f"{HIERARCHY_ROOT}|{self.label}"


def sidecar_path(image: str, naming: str = "ext") -> str:
    """`NAME.EXT.xmp` (darktable, digiKam) or, with naming "stem", `NAME.xmp` (Lightroom)."""
    if naming not in NAMINGS:
        raise ValueError(f"sidecar naming is one of {NAMINGS}, not {naming!r}")
    return (image if naming == "ext" else os.path.splitext(image)[0]) + ".xmp"


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           huge_tree=False, remove_blank_text=False)


def parse(data: bytes) -> etree._ElementTree:
    """Parse sidecar bytes, or raise SidecarError with a one-line reason."""
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise SidecarError(f"not valid XML ({str(exc).strip()[:160]})") from None
    tree = root.getroottree()
    if tree.docinfo.internalDTD is not None or tree.docinfo.doctype:
        raise SidecarError("has a DTD, which XMP never has")
    if root.tag not in (_q(X, "xmpmeta"), _q(RDF, "RDF")):
        raise SidecarError(f"not XMP (its root element is <{root.tag}>)")
    return tree


def _rdf(tree: etree._ElementTree) -> etree._Element:
    root = tree.getroot()
    if root.tag == _q(RDF, "RDF"):
        return root
    found = root.find(_q(RDF, "RDF"))
    return found if found is not None else etree.SubElement(root, _q(RDF, "RDF"),
                                                            nsmap={"rdf": RDF})


def _descriptions(rdf: etree._Element) -> list[etree._Element]:
    return rdf.findall(_q(RDF, "Description"))


def _items(prop: etree._Element) -> list[etree._Element]:
    """The rdf:li of a Bag/Seq/Alt property."""
    return [li for container in prop for li in container.findall(_q(RDF, "li"))]


def _owned(descriptions: list[etree._Element], name: str) -> set[str]:
    return {li.text or "" for d in descriptions for p in d.findall(_q(SCENETOOL, name))
            for li in _items(p)}


def _keyword_values(descriptions: list[etree._Element], ns: str, name: str) -> set[str]:
    return {li.text or "" for d in descriptions for p in d.findall(_q(ns, name))
            for li in _items(p)}


def _has_scenetool(descriptions: list[etree._Element]) -> bool:
    return any(child.tag.startswith(f"{{{SCENETOOL}}}") for d in descriptions for child in d
               if isinstance(child.tag, str)) or any(
        key.startswith(f"{{{SCENETOOL}}}") for d in descriptions for key in d.attrib)


def _strip(rdf: etree._Element) -> None:
    """Take out scenetool's keywords and its own properties, nothing else; a Description
    that held only those goes too."""
    descriptions = _descriptions(rdf)
    owned = {(DC, "subject"): _owned(descriptions, OWN_SUBJECT),
             (LR, "hierarchicalSubject"): _owned(descriptions, OWN_HIERARCHICAL)}
    for d in descriptions:
        had_content = not _empty(d)
        for (ns, name), values in owned.items():
            for prop in d.findall(_q(ns, name)):
                for li in _items(prop):
                    if (li.text or "") in values:
                        li.getparent().remove(li)
                if not _items(prop):
                    d.remove(prop)
        for child in list(d):
            if isinstance(child.tag, str) and child.tag.startswith(f"{{{SCENETOOL}}}"):
                d.remove(child)
        for key in [k for k in d.attrib if k.startswith(f"{{{SCENETOOL}}}")]:
            del d.attrib[key]
        if had_content and _empty(d):
            rdf.remove(d)


def _bag(parent: etree._Element, ns: str, name: str) -> etree._Element:
    """The container of `parent`'s ns:name property, created as an rdf:Bag when missing."""
    prop = parent.find(_q(ns, name))
    if prop is None:
        prop = etree.SubElement(parent, _q(ns, name), nsmap={_prefix(ns): ns})
    container = next((c for c in prop if isinstance(c.tag, str)), None)
    if container is None:
        container = etree.SubElement(prop, _q(RDF, "Bag"))
    return container


def _prefix(ns: str) -> str:
    return next(p for p, uri in PREFIXES.items() if uri == ns)


def _holder(descriptions: list[etree._Element], ns: str, name: str,
            default: etree._Element) -> etree._Element:
    """Where a keyword goes: the Description that already holds ns:name (so it joins that
    list), else one that declares ns, else `default`."""
    return next((d for d in descriptions if d.find(_q(ns, name)) is not None),
                next((d for d in descriptions if ns in d.nsmap.values()), default))


def _own_description(rdf: etree._Element) -> etree._Element:
    """The Description that declares scenetool's namespace (a new sidecar's only one), else
    a new Description of scenetool's own."""
    descriptions = _descriptions(rdf)
    found = next((d for d in descriptions if SCENETOOL in d.nsmap.values()), None)
    return found if found is not None else _new_description(rdf, {"scenetool": SCENETOOL})


def _new_description(rdf: etree._Element, nsmap: dict[str, str]) -> etree._Element:
    description = etree.SubElement(rdf, _q(RDF, "Description"), nsmap=nsmap)
    description.set(_q(RDF, "about"), "")
    return description


def _add(rdf: etree._Element, tag: Tag) -> None:
    descriptions = _descriptions(rdf)
    own = _own_description(rdf)
    subject, hierarchical = tag.keywords()
    added: dict[str, list[str]] = {OWN_SUBJECT: [], OWN_HIERARCHICAL: []}
    for ns, name, keyword, record in ((DC, "subject", subject, OWN_SUBJECT),
                                      (LR, "hierarchicalSubject", hierarchical,
                                       OWN_HIERARCHICAL)):
        if keyword in _keyword_values(descriptions, ns, name):
            continue  # the user's own keyword: leave it theirs
        li = etree.SubElement(_bag(_holder(descriptions, ns, name, own), ns, name),
                              _q(RDF, "li"))
        li.text = keyword
        added[record].append(keyword)
    values = {"label": tag.label, "confidence": f"{tag.confidence:.4f}",
              "modelSha256": tag.model_sha256}
    for name, value in values.items():
        etree.SubElement(own, _q(SCENETOOL, name)).text = value
    for name, keywords in added.items():
        if keywords:
            bag = _bag(own, SCENETOOL, name)
            for keyword in keywords:
                etree.SubElement(bag, _q(RDF, "li")).text = keyword


def _current(descriptions: list[etree._Element]) -> dict[str, str]:
    found = {}
    for d in descriptions:
        for name in PROPERTIES:
            value = d.find(_q(SCENETOOL, name))
            if value is not None:
                found[name] = value.text or ""
    return found


def _in_place(descriptions: list[etree._Element], tag: Tag) -> bool:
    """Whether the sidecar already says exactly what `tag` would write."""
    current = _current(descriptions)
    subject, hierarchical = tag.keywords()
    return (current.get("label") == tag.label
            and current.get("confidence") == f"{tag.confidence:.4f}"
            and current.get("modelSha256") == tag.model_sha256
            and subject in _keyword_values(descriptions, DC, "subject")
            and hierarchical in _keyword_values(descriptions, LR, "hierarchicalSubject"))


def new_packet() -> etree._ElementTree:
    """An empty XMP packet: x:xmpmeta / rdf:RDF / one rdf:Description about this photo,
    declaring the namespaces scenetool writes."""
    from scenetool import __version__

    root = etree.Element(_q(X, "xmpmeta"), nsmap={"x": X})
    root.set(_q(X, "xmptk"), f"scenetool {__version__}")
    rdf = etree.SubElement(root, _q(RDF, "RDF"), nsmap={"rdf": RDF})
    _new_description(rdf, {p: PREFIXES[p] for p in ("dc", "lr", "scenetool")})
    return root.getroottree()


def _empty(description: etree._Element) -> bool:
    return len(description) == 0 and set(description.attrib) <= {_q(RDF, "about")}


def _serialize(tree: etree._ElementTree, declaration: bool) -> bytes:
    etree.indent(tree, space=" ")
    return etree.tostring(tree, xml_declaration=declaration, encoding="UTF-8") + b"\n"


def merge(existing: bytes | None, tag: Tag | None) -> bytes | None:
    """The sidecar's new bytes: `existing` (None: no sidecar yet) with scenetool's earlier
    keywords replaced by `tag`'s (`tag` None: taken out). Returns `existing` itself when
    nothing changes, and None when no sidecar should remain. Raises SidecarError."""
    if existing is None:
        if tag is None:
            return None
        tree, declaration = new_packet(), True
    else:
        tree = parse(existing)
        declaration = existing.lstrip().startswith(b"<?xml")
    rdf = _rdf(tree)
    descriptions = _descriptions(rdf)
    if tag is not None and _in_place(descriptions, tag):
        return existing
    if tag is None and not _has_scenetool(descriptions):
        return existing
    _strip(rdf)
    if tag is not None:
        _add(rdf, tag)
    elif len(rdf) == 0:
        return None  # it held scenetool's keywords and nothing else
    return _serialize(tree, declaration)


def update(sidecar: str, tag: Tag | None, dry_run: bool = False) -> Outcome:
    """Write `tag` into the sidecar at `sidecar` (None: take scenetool's keywords out).

    Raises SidecarError for a sidecar that is not XMP (left untouched) and OSError when it
    cannot be read or written.
    """
    try:
        with open(sidecar, "rb") as f:
            existing: bytes | None = f.read()
    except FileNotFoundError:
        existing = None
    new = merge(existing, tag)
    if new is existing:
        return Outcome.ABSENT if existing is None else Outcome.UNCHANGED
    if new is None:
        if not dry_run:
            os.unlink(sidecar)
        return Outcome.DELETED
    if not dry_run:
        write_bytes(os.path.realpath(sidecar), new)
    if existing is None:
        return Outcome.CREATED
    return Outcome.UPDATED if tag is not None else Outcome.REMOVED


def read(sidecar: str) -> dict[str, str]:
    """scenetool's own properties in a sidecar (label, confidence, modelSha256), or {}."""
    with open(sidecar, "rb") as f:
        return _current(_descriptions(_rdf(parse(f.read()))))
