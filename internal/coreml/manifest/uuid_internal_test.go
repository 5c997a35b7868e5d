package manifest

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

func TestUUID5(t *testing.T) {
	dns := [16]byte{0x6b, 0xa7, 0xb8, 0x10, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8}
	url := dns
	url[3] = 0x11 // 6ba7b811-…, the RFC 9562 URL namespace
	tests := []struct {
		ns   [16]byte
		name string
		want string
	}{
		// Python: uuid.uuid5(uuid.NAMESPACE_DNS, "python.org")
		{dns, "python.org", "886313e1-3b8a-5372-9b90-0c9aee199e5d"},
		// The documented derivation of Namespace.
		{url, "https://github.com/anemll/anemll/internal/coreml/manifest", "dce50e13-4074-51f8-ba2c-740fae8d27fd"},
	}
	for _, tc := range tests {
		if got := uuid5(tc.ns, []byte(tc.name)); got != tc.want {
			t.Errorf("uuid5(%q) = %s, want %s", tc.name, got, tc.want)
		}
	}
	b, err := hex.DecodeString(strings.ReplaceAll(tests[1].want, "-", ""))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, Namespace[:]) {
		t.Errorf("Namespace = % x, want % x", Namespace, b)
	}
}
