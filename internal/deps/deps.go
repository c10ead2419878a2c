//go:build deps

// Package deps pins the project's dependencies in go.mod while the packages
// that use them are being written. Removed once every one is imported.
package deps

import (
	_ "github.com/BurntSushi/toml"
	_ "github.com/emersion/go-message"
	_ "github.com/emersion/go-sasl"
	_ "github.com/emersion/go-smtp"
	_ "github.com/spf13/pflag"
	_ "golang.org/x/sys/unix"
)
