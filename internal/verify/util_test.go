package verify

import "strings"

type stringsBuilder = strings.Builder
