package config

import (
	"errors"
)

// Load reads and validates the file at path, on top of Default(). It never
// reads secrets (see LoadSecrets). A missing file at DefaultPath is not an
// error for sendmail's few keys: callers decide.
//
// TEMPORARY: replaced by the strict parser (pkg/config owner).
func Load(path string) (*Config, error) {
	c := Default()
	c.Source = path
	return c, nil
}

// LoadSecrets reads every upstream's password_file into Password. It
// refuses a file that is group- or world-readable. relayd only.
func (c *Config) LoadSecrets() error {
	return errors.New("config: LoadSecrets not implemented yet")
}
