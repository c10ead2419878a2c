package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// The decoder fills the typed structs of config.go from the TOML document
// (already parsed by BurntSushi/toml into maps). The structs' toml tags
// are the schema: a key without a field is unknown, and a field's Go type
// says which values it takes. Unlike toml.Decode into the structs, it
// reports every problem of the file (not only the first), with the line of
// each key, in mailshim's words ("must be a string, not an integer"), and
// it matches keys exactly (toml.Decode would also take "Spool" or "HOST").
type decoder struct {
	file string
	loc  *locator
	errs []*Error
	// seen records every key path found in the file: true when its value
	// was decoded, false when it was not (an error was reported for it).
	seen map[string]bool
}

var (
	durationType     = reflect.TypeOf(time.Duration(0))
	durationListType = reflect.TypeOf([]time.Duration(nil))
)

// errf records an error about the key at path (array indices included).
func (d *decoder) errf(path []string, format string, args ...any) {
	d.errs = append(d.errs, &Error{
		File: d.file,
		Line: d.loc.line(path...),
		Key:  displayKey(path),
		Msg:  fmt.Sprintf(format, args...),
	})
}

// field is one key of a section: its name and where it goes.
type field struct {
	name  string
	index int
	tag   reflect.StructTag
}

// fieldsOf lists the keys of a section struct, in declaration order.
func fieldsOf(t reflect.Type) []field {
	var out []field
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := f.Tag.Get("toml")
		if !f.IsExported() || name == "" || name == "-" {
			continue
		}
		out = append(out, field{name: name, index: i, tag: f.Tag})
	}
	return out
}

// isSection reports whether a field of type t is written as a table or an
// array of tables rather than as a key = value.
func isSection(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return true
	case reflect.Slice:
		return t.Elem().Kind() == reflect.Struct
	}
	return false
}

// keyRefuser is a section with keys that are refused with a message of
// their own instead of "unknown key".
type keyRefuser interface {
	refuseKey(key string) string
}

// table decodes the TOML table m into the struct rv.
func (d *decoder) table(path []string, m map[string]any, rv reflect.Value) {
	fields := fieldsOf(rv.Type())
	for _, k := range d.keys(path, m) {
		p := sub(path, k)
		i, rest := -1, -1
		for j, f := range fields {
			if f.tag.Get("conf") == "rest" {
				rest = j
				continue
			}
			if f.name == k {
				i = j
				break
			}
		}
		if _, isTable := m[k].(map[string]any); i < 0 && rest >= 0 && isTable {
			// A section whose other keys are its entries ([policy]'s
			// account tables): k is one of them.
			d.restEntry(p, k, m[k], rv.Field(fields[rest].index))
			continue
		}
		if i < 0 {
			if r, ok := rv.Addr().Interface().(keyRefuser); ok {
				if msg := r.refuseKey(k); msg != "" {
					d.errf(p, "%s", msg)
					continue
				}
			}
			d.unknown(path, k)
			continue
		}
		d.value(p, m[k], rv.Field(fields[i].index), fields[i].tag)
	}
}

// restEntry decodes raw, the key k of a section written at p, into the
// map mv: the section's field tagged conf:"rest", which takes every key
// the section's struct does not name.
func (d *decoder) restEntry(p []string, k string, raw any, mv reflect.Value) {
	if mv.IsNil() {
		mv.Set(reflect.MakeMap(mv.Type()))
	}
	e := reflect.New(mv.Type().Elem()).Elem()
	d.value(p, raw, e, "")
	if d.seen[strings.Join(p, ".")] {
		mv.SetMapIndex(reflect.ValueOf(k), e)
	}
}

// value decodes one value into rv, by rv's type.
func (d *decoder) value(p []string, raw any, rv reflect.Value, tag reflect.StructTag) {
	ok := d.convert(p, raw, rv, tag)
	if d.seen == nil {
		d.seen = make(map[string]bool)
	}
	d.seen[strings.Join(p, ".")] = ok
}

func (d *decoder) convert(p []string, raw any, rv reflect.Value, tag reflect.StructTag) bool {
	t := rv.Type()
	switch {
	case t == durationType:
		v, ok := d.duration(p, raw)
		if ok {
			rv.SetInt(int64(v))
		}
		return ok
	case t == durationListType:
		return d.durations(p, raw, rv)
	case tag.Get("conf") == "size":
		n, ok := d.size(p, raw)
		if ok {
			rv.SetInt(n)
		}
		return ok
	}
	switch t.Kind() {
	case reflect.String:
		s, ok := raw.(string)
		if !ok {
			d.errf(p, "must be a string, not %s", typeName(raw))
			return false
		}
		rv.SetString(s)
	case reflect.Bool:
		b, ok := raw.(bool)
		if !ok {
			d.errf(p, "must be true or false, not %s", typeName(raw))
			return false
		}
		rv.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, ok := raw.(int64)
		if !ok {
			d.errf(p, "must be an integer, not %s", typeName(raw))
			return false
		}
		rv.SetInt(n)
	case reflect.Struct:
		m, ok := d.tableValue(p, raw)
		if !ok {
			return false
		}
		d.table(p, m, rv)
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Struct {
			return d.tables(p, raw, rv, tag.Get("each"))
		}
		if t.Elem().Kind() == reflect.Int {
			list, ok := d.intList(p, raw)
			if ok {
				rv.Set(reflect.ValueOf(list))
			}
			return ok
		}
		list, ok := d.strList(p, raw)
		if !ok {
			return false
		}
		rv.Set(reflect.ValueOf(list))
	case reflect.Map:
		m, ok := d.tableValue(p, raw)
		if !ok {
			return false
		}
		out := reflect.MakeMapWithSize(t, len(m))
		for _, k := range d.keys(p, m) {
			e := reflect.New(t.Elem()).Elem()
			kp := sub(p, k)
			if d.convert(kp, m[k], e, "") {
				out.SetMapIndex(reflect.ValueOf(k), e)
			}
		}
		rv.Set(out)
	default:
		panic("config: no decoder for " + t.String())
	}
	return true
}

func (d *decoder) tableValue(p []string, raw any) (map[string]any, bool) {
	m, ok := raw.(map[string]any)
	if !ok {
		d.errf(p, "must be a table ([%s]), not %s", displayKey(p), typeName(raw))
	}
	return m, ok
}

// tables decodes an array of tables ([[name]]) into the slice rv.
func (d *decoder) tables(p []string, raw any, rv reflect.Value, each string) bool {
	var list []map[string]any
	switch x := raw.(type) {
	case []map[string]any:
		list = x
	case []any: // name = [{...}, {...}]
		for i, e := range x {
			m, ok := e.(map[string]any)
			if !ok {
				d.errf(sub(p, index(i)), "must be a table, not %s", typeName(e))
				return false
			}
			list = append(list, m)
		}
	case map[string]any:
		name := displayKey(p)
		d.errf(p, "write [[%s]] (an array of tables, one per %s), not [%s]", name, each, name)
		return false
	default:
		d.errf(p, "must be [[%s]] tables, not %s", displayKey(p), typeName(raw))
		return false
	}
	out := reflect.MakeSlice(rv.Type(), len(list), len(list))
	for i, m := range list {
		d.table(sub(p, index(i)), m, out.Index(i))
	}
	rv.Set(out)
	return true
}

// intList decodes an array of integers (a single integer is a
// one-element list).
func (d *decoder) intList(p []string, v any) ([]int, bool) {
	if n, ok := v.(int64); ok {
		return []int{int(n)}, true
	}
	arr, ok := v.([]any)
	if !ok {
		d.errf(p, "must be an array of integers, not %s", typeName(v))
		return nil, false
	}
	out := make([]int, 0, len(arr))
	for i, e := range arr {
		n, ok := e.(int64)
		if !ok {
			d.errf(p, "element %d must be an integer, not %s", i+1, typeName(e))
			return nil, false
		}
		out = append(out, int(n))
	}
	return out, true
}

func (d *decoder) strList(p []string, v any) ([]string, bool) {
	if s, ok := v.(string); ok { // a single string is a one-element list
		return []string{s}, true
	}
	arr, ok := v.([]any)
	if !ok {
		d.errf(p, "must be an array of strings, not %s", typeName(v))
		return nil, false
	}
	out := make([]string, 0, len(arr))
	for i, e := range arr {
		s, ok := e.(string)
		if !ok {
			d.errf(p, "element %d must be a string, not %s", i+1, typeName(e))
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

func (d *decoder) duration(p []string, v any) (time.Duration, bool) {
	s, ok := v.(string)
	if !ok {
		if n, isInt := v.(int64); isInt {
			d.errf(p, "must be a duration string with a unit, e.g. \"%ds\"", n)
		} else {
			d.errf(p, "must be a duration string (e.g. \"5m\"), not %s", typeName(v))
		}
		return 0, false
	}
	dur, err := ParseDuration(s)
	if err != nil {
		d.errf(p, "%v", err)
		return 0, false
	}
	if dur <= 0 {
		d.errf(p, "must be longer than zero")
		return 0, false
	}
	return dur, true
}

// durations decodes a schedule: a list of durations (or one), not empty.
func (d *decoder) durations(p []string, v any, rv reflect.Value) bool {
	var items []any
	switch x := v.(type) {
	case []any:
		items = x
	case string:
		items = []any{x}
	default:
		d.errf(p, "must be an array of durations, e.g. [\"1m\", \"5m\", \"1h\"], not %s", typeName(v))
		return false
	}
	if len(items) == 0 {
		d.errf(p, "must list at least one interval")
		return false
	}
	list := make([]time.Duration, 0, len(items))
	for _, it := range items {
		if dur, ok := d.duration(p, it); ok {
			list = append(list, dur)
		}
	}
	if len(list) != len(items) {
		return false
	}
	rv.Set(reflect.ValueOf(list))
	return true
}

func (d *decoder) size(p []string, v any) (int64, bool) {
	var n int64
	var err error
	switch x := v.(type) {
	case string:
		n, err = ParseSize(x)
	case int64:
		n, err = ParseSize(strconv.FormatInt(x, 10))
		if x < 0 {
			err = fmt.Errorf("%d is negative", x)
		}
	default:
		err = fmt.Errorf("must be a size like \"50MB\", not %s", typeName(v))
	}
	switch {
	case err != nil:
		d.errf(p, "%v", err)
		return 0, false
	case n <= 0:
		d.errf(p, "must be larger than zero")
		return 0, false
	}
	return n, true
}

func typeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case time.Time:
		return "a date"
	case map[string]any:
		return "a table"
	case []map[string]any, []any:
		return "an array"
	}
	return fmt.Sprintf("%T", v)
}

// unknown reports key k of the table at path, with a hint when k is a key
// of another section or of the top level.
func (d *decoder) unknown(path []string, k string) {
	p := sub(path, k)
	if sec := sectionOf(k); sec != "" && (len(path) == 0 || !strings.Contains(sec, "["+path[0]+"]")) {
		d.errf(p, "unknown key (it belongs in %s)", sec)
		return
	}
	if len(path) > 0 && topLevelKey(k) {
		d.errf(p, "unknown key (it belongs at the top of the file, before any [section])")
		return
	}
	d.errf(p, "unknown key")
}

var configType = reflect.TypeOf(Config{})

// topLevelKey reports whether k is a key = value of the top level.
func topLevelKey(k string) bool {
	for _, f := range fieldsOf(configType) {
		if f.name == k && !isSection(configType.Field(f.index).Type) {
			return true
		}
	}
	return false
}

// sectionOf names the sections that have a key k ("[queue]",
// "[[upstream]]"), or "" when none has.
func sectionOf(k string) string {
	var secs []string
	for _, f := range fieldsOf(configType) {
		t := configType.Field(f.index).Type
		format := "[%s]"
		if t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct {
			t, format = t.Elem(), "[[%s]]"
		}
		if t.Kind() != reflect.Struct {
			continue
		}
		for _, g := range fieldsOf(t) {
			if g.name == k {
				secs = append(secs, fmt.Sprintf(format, f.name))
				break
			}
		}
	}
	return strings.Join(secs, " or ")
}
