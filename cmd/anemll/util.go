package main

import "strings"

// stringsBuilder is a strings.Builder usable as an io.Writer value.
type stringsBuilder = strings.Builder
