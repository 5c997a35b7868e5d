// Package manifest reads and writes the Manifest.json of a Core ML
// .mlpackage: the file format version, the package items (each an author,
// description, name and a path relative to the package's Data/ directory,
// keyed by an identifier) and the identifier of the root model item.
package manifest

import (
	"bytes"
	"crypto/sha1"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Values coremltools writes for a standard ML Program package.
const (
	// FileFormatVersion is the newest manifest version readers accept.
	FileFormatVersion = "1.0.0"
	// Author is the author of both standard items.
	Author = "com.apple.CoreML"
	// ModelName, ModelDescription and ModelPath describe the root item,
	// the serialized Model protobuf.
	ModelName        = "model.mlmodel"
	ModelDescription = "CoreML Model Specification"
	ModelPath        = Author + "/" + ModelName
	// WeightsName, WeightsDescription and WeightsPath describe the
	// weights directory item (holding weight.bin).
	WeightsName        = "weights"
	WeightsDescription = "CoreML Model Weights"
	WeightsPath        = Author + "/" + WeightsName
)

// maxSize bounds the manifest Read accepts; real ones are under 1 KiB.
const maxSize = 1 << 20

// ErrInvalid is matched (errors.Is) by every error reporting a malformed or
// unsupported manifest.
var ErrInvalid = errors.New("manifest: invalid Manifest.json")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Item is one package item. Path is relative to the package's Data/
// directory and by convention is Author + "/" + Name.
type Item struct {
	Author      string
	Description string
	Name        string
	Path        string
}

// Manifest is the content of Manifest.json.
type Manifest struct {
	FileFormatVersion   string
	Items               map[string]Item // by item identifier
	RootModelIdentifier string
}

// Namespace is the UUID namespace of the identifiers New derives:
// dce50e13-4074-51f8-ba2c-740fae8d27fd, itself the version-5 UUID of the
// URL "https://github.com/anemll/anemll/internal/coreml/manifest" in the
// RFC 9562 URL namespace.
var Namespace = [16]byte{0xdc, 0xe5, 0x0e, 0x13, 0x40, 0x74, 0x51, 0xf8, 0xba, 0x2c, 0x74, 0x0f, 0xae, 0x8d, 0x27, 0xfd}

// uuid5 returns the RFC 9562 version-5 (SHA-1, name-based) UUID of name in
// namespace ns, as lowercase 8-4-4-4-12 hex.
func uuid5(ns [16]byte, name []byte) string {
	h := sha1.New()
	h.Write(ns[:])
	h.Write(name)
	var u [16]byte
	copy(u[:], h.Sum(nil))
	u[6] = u[6]&0x0f | 0x50
	u[8] = u[8]&0x3f | 0x80
	const hexdigits = "0123456789abcdef"
	out := make([]byte, 0, 36)
	for i, b := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out = append(out, '-')
		}
		out = append(out, hexdigits[b>>4], hexdigits[b&15])
	}
	return string(out)
}

// ItemID returns the identifier New gives the item at itemPath for seed:
// the version-5 UUID in Namespace of the name seed + "\x00" + itemPath,
// lowercase as coremltools writes on Linux.
func ItemID(seed []byte, itemPath string) string {
	name := make([]byte, 0, len(seed)+1+len(itemPath))
	name = append(append(append(name, seed...), 0), itemPath...)
	return uuid5(Namespace, name)
}

// New returns the manifest coremltools writes for an ML Program package:
// version 1.0.0, the root model item (ModelPath) and the weights directory
// item (WeightsPath). Unlike coremltools, which uses random UUIDs, the
// identifiers are derived from seed (see ItemID), so the same seed, for
// example a digest of the package content, gives a byte-identical manifest.
func New(seed []byte) *Manifest {
	root := ItemID(seed, ModelPath)
	return &Manifest{
		FileFormatVersion: FileFormatVersion,
		Items: map[string]Item{
			root:                      {Author: Author, Description: ModelDescription, Name: ModelName, Path: ModelPath},
			ItemID(seed, WeightsPath): {Author: Author, Description: WeightsDescription, Name: WeightsName, Path: WeightsPath},
		},
		RootModelIdentifier: root,
	}
}

// RootModelPath returns the path, relative to Data/, of the root model item.
func (m *Manifest) RootModelPath() (string, error) {
	it, ok := m.Items[m.RootModelIdentifier]
	if !ok {
		return "", invalid("root model identifier %q is not an item", m.RootModelIdentifier)
	}
	return it.Path, nil
}

// WeightsPath returns the path, relative to Data/, of the weights directory
// item: the item named "weights" by author "com.apple.CoreML". It is an
// error if there is none or more than one.
func (m *Manifest) WeightsPath() (string, error) {
	var found []string
	for _, it := range m.Items {
		if it.Author == Author && it.Name == WeightsName {
			found = append(found, it.Path)
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("manifest: no %s/%s item", Author, WeightsName)
	case 1:
		return found[0], nil
	}
	slices.Sort(found)
	return "", invalid("%d %s/%s items: %q", len(found), Author, WeightsName, found)
}

// parseVersion parses "major.minor.patch" (decimal digits only).
func parseVersion(v string) ([3]uint64, bool) {
	var out [3]uint64
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return out, false
	}
	for i, p := range parts {
		if p == "" || strings.TrimLeft(p, "0123456789") != "" {
			return out, false
		}
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return out, false
		}
		out[i] = n
	}
	return out, true
}

// checkPath accepts a clean relative slash-separated path that stays inside
// Data/: not empty or ".", not absolute, no "..", "." or empty elements, no
// backslash or NUL.
func checkPath(p string) error {
	switch {
	case p == "" || p == ".":
		return errors.New("empty")
	case strings.HasPrefix(p, "/"):
		return errors.New("absolute")
	case strings.ContainsAny(p, "\\\x00"):
		return errors.New("contains a backslash or NUL")
	case path.Clean(p) != p:
		return errors.New("not clean")
	case p == ".." || strings.HasPrefix(p, "../"):
		return errors.New("leaves the Data directory")
	}
	return nil
}

// Validate checks what Read and Marshal require: a "major.minor.patch"
// version not newer than 1.0.0, a root identifier naming an item, and for
// every item a non-empty identifier, valid UTF-8 strings and a clean
// relative path.
func (m *Manifest) Validate() error {
	v, ok := parseVersion(m.FileFormatVersion)
	if !ok {
		return invalid("fileFormatVersion %q is not major.minor.patch", m.FileFormatVersion)
	}
	if v[0] > 1 || v[0] == 1 && (v[1] > 0 || v[2] > 0) {
		return invalid("fileFormatVersion %s is newer than %s", m.FileFormatVersion, FileFormatVersion)
	}
	for _, id := range slices.Sorted(maps.Keys(m.Items)) {
		it := m.Items[id]
		if id == "" {
			return invalid("item with empty identifier")
		}
		for _, s := range []string{id, it.Author, it.Description, it.Name, it.Path} {
			if !utf8.ValidString(s) {
				return invalid("item %q: invalid UTF-8 in %q", id, s)
			}
		}
		if err := checkPath(it.Path); err != nil {
			return invalid("item %q: path %q: %v", id, it.Path, err)
		}
	}
	if _, ok := m.Items[m.RootModelIdentifier]; !ok {
		return invalid("rootModelIdentifier %q is not an item", m.RootModelIdentifier)
	}
	return nil
}

// Read parses and validates a Manifest.json (see Validate). Every item
// must have the keys author, description, name and path, all strings;
// other keys, at the top level or in items, are ignored (and so dropped by
// Marshal). Keys match exactly (case-sensitive). Input over 1 MiB is
// refused.
func Read(r io.Reader) (*Manifest, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxSize+1))
	if err != nil {
		return nil, fmt.Errorf("manifest: read: %w", err)
	}
	if len(data) > maxSize {
		return nil, invalid("larger than %d bytes", maxSize)
	}
	if !utf8.Valid(data) {
		return nil, invalid("not valid UTF-8")
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, invalid("%v", err)
	}
	if top == nil {
		return nil, invalid("not a JSON object")
	}
	m := &Manifest{}
	if err := stringField(top, "fileFormatVersion", &m.FileFormatVersion); err != nil {
		return nil, invalid("%v", err)
	}
	if err := stringField(top, "rootModelIdentifier", &m.RootModelIdentifier); err != nil {
		return nil, invalid("%v", err)
	}
	raw, ok := top["itemInfoEntries"]
	if !ok {
		return nil, invalid("missing key itemInfoEntries")
	}
	var entries map[string]map[string]json.RawMessage
	if err := json.Unmarshal(raw, &entries); err != nil || entries == nil {
		return nil, invalid("itemInfoEntries is not an object of objects")
	}
	m.Items = make(map[string]Item, len(entries))
	for _, id := range slices.Sorted(maps.Keys(entries)) {
		e := entries[id]
		if e == nil {
			return nil, invalid("item %q is not an object", id)
		}
		var it Item
		for _, f := range []struct {
			key string
			dst *string
		}{{"author", &it.Author}, {"description", &it.Description}, {"name", &it.Name}, {"path", &it.Path}} {
			if err := stringField(e, f.key, f.dst); err != nil {
				return nil, invalid("item %q: %v", id, err)
			}
		}
		m.Items[id] = it
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// stringField decodes obj[key], which must exist and be a JSON string.
func stringField(obj map[string]json.RawMessage, key string, dst *string) error {
	raw, ok := obj[key]
	if !ok {
		return fmt.Errorf("missing key %s", key)
	}
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, dst) != nil {
		return fmt.Errorf("%s is not a string", key)
	}
	return nil
}

// Marshal validates m and encodes it exactly as coremltools does
// (nlohmann::json dump(4) plus a newline): 4-space indent, keys sorted
// bytewise, ": " after keys, strings escaped as nlohmann escapes them
// (\" \\ \b \f \n \r \t, other control characters as \u00xx, everything
// else, including non-ASCII and "/", verbatim).
func (m *Manifest) Marshal() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString("{\n    \"fileFormatVersion\": ")
	quote(&b, m.FileFormatVersion)
	b.WriteString(",\n    \"itemInfoEntries\": {")
	for i, id := range slices.Sorted(maps.Keys(m.Items)) {
		it := m.Items[id]
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("\n        ")
		quote(&b, id)
		b.WriteString(": {\n            \"author\": ")
		quote(&b, it.Author)
		b.WriteString(",\n            \"description\": ")
		quote(&b, it.Description)
		b.WriteString(",\n            \"name\": ")
		quote(&b, it.Name)
		b.WriteString(",\n            \"path\": ")
		quote(&b, it.Path)
		b.WriteString("\n        }")
	}
	b.WriteString("\n    },\n    \"rootModelIdentifier\": ")
	quote(&b, m.RootModelIdentifier)
	b.WriteString("\n}\n")
	return b.Bytes(), nil
}

// quote writes s as a JSON string the way nlohmann::json dump does with
// ensure_ascii off. s must be valid UTF-8 (Validate checks).
func quote(b *bytes.Buffer, s string) {
	const hexdigits = "0123456789abcdef"
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if c < 0x20 {
				b.WriteString(`\u00`)
				b.WriteByte(hexdigits[c>>4])
				b.WriteByte(hexdigits[c&15])
			} else {
				b.WriteByte(c)
			}
		}
	}
	b.WriteByte('"')
}
