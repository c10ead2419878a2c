package config

import (
	"reflect"
	"testing"
)

// Every field of the schema can be decoded: whatever value a file gives
// a key, the decoder answers with a value or an error, never a panic (a
// field of a type decode.go does not handle, or a named slice type it
// cannot set, would panic at the first file that sets the key).
func TestSchemaDecodable(t *testing.T) {
	samples := []any{"x", "1m", "1MB", int64(1), true, 1.5,
		[]any{"x"}, []any{int64(1)}, []any{"1m"},
		map[string]any{}, map[string]any{"k": "x"}, map[string]any{"k": []any{"x"}},
		[]map[string]any{{}}}
	var walk func(path string, t reflect.Type)
	walk = func(path string, st reflect.Type) {
		for _, f := range fieldsOf(st) {
			ft := st.Field(f.index).Type
			name := path + f.name
			for _, raw := range samples {
				func() {
					defer func() {
						if r := recover(); r != nil {
							t.Errorf("%s (%s) = %#v: panic: %v (its type needs a case in decoder.convert)", name, ft, raw, r)
						}
					}()
					d := &decoder{file: "t.conf", loc: locate("")}
					d.value([]string{name}, raw, reflect.New(ft).Elem(), f.tag)
				}()
			}
			et := ft
			if et.Kind() == reflect.Slice || et.Kind() == reflect.Map {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct && et != durationType {
				walk(name+".", et)
			}
		}
	}
	walk("", configType)
}
