package adminapi

import (
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// maxJSONDepth is how deeply objects and arrays may nest in a request body.
const maxJSONDepth = 32

// checkJSON enforces the contract's rules on a request body before it is
// decoded: at most one JSON value (RFC 8259), valid UTF-8 with no lone
// surrogate escapes, nested at most maxJSONDepth deep, with no name twice in
// one object. encoding/json alone would replace invalid UTF-8 silently, keep
// the last of two equal names and follow any depth. An empty body passes:
// the handler says a JSON object is required.
func checkJSON(body []byte) error {
	if !utf8.Valid(body) {
		return badRequest("body: JSON must be valid UTF-8")
	}
	s := jsonScanner{b: body}
	s.space()
	if s.i == len(s.b) {
		return nil
	}
	if err := s.value(); err != nil {
		return err
	}
	s.space()
	if s.i != len(s.b) {
		return s.fail("data after the value")
	}
	return nil
}

// jsonScanner walks a body once, without building values.
type jsonScanner struct {
	b     []byte
	i     int
	depth int
}

func (s *jsonScanner) fail(what string) error {
	return badRequest("body: malformed JSON: " + what + " at offset " + strconv.Itoa(s.i))
}

func (s *jsonScanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *jsonScanner) value() error {
	if s.i == len(s.b) {
		return s.fail("unexpected end")
	}
	switch c := s.b[s.i]; {
	case c == '{':
		return s.object()
	case c == '[':
		return s.array()
	case c == '"':
		_, err := s.str(false)
		return err
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	}
	return s.fail("unexpected character")
}

func (s *jsonScanner) enter() error {
	if s.depth == maxJSONDepth {
		return badRequest("body: JSON nested deeper than " + strconv.Itoa(maxJSONDepth) + " levels")
	}
	s.depth++
	s.i++ // the bracket
	s.space()
	return nil
}

func (s *jsonScanner) object() error {
	if err := s.enter(); err != nil {
		return err
	}
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		s.depth--
		return nil
	}
	var names []string // objects are small: a slice beats a map
	for {
		if s.i == len(s.b) || s.b[s.i] != '"' {
			return s.fail("expected a name")
		}
		name, err := s.str(true)
		if err != nil {
			return err
		}
		for _, n := range names {
			if n == name {
				return badRequest("body: duplicate name " + strconv.Quote(name) + " in a JSON object")
			}
		}
		names = append(names, name)
		s.space()
		if s.i == len(s.b) || s.b[s.i] != ':' {
			return s.fail("expected ':'")
		}
		s.i++
		s.space()
		if err := s.value(); err != nil {
			return err
		}
		s.space()
		if s.i == len(s.b) {
			return s.fail("unexpected end")
		}
		switch s.b[s.i] {
		case ',':
			s.i++
			s.space()
		case '}':
			s.i++
			s.depth--
			return nil
		default:
			return s.fail("expected ',' or '}'")
		}
	}
}

func (s *jsonScanner) array() error {
	if err := s.enter(); err != nil {
		return err
	}
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		s.depth--
		return nil
	}
	for {
		if err := s.value(); err != nil {
			return err
		}
		s.space()
		if s.i == len(s.b) {
			return s.fail("unexpected end")
		}
		switch s.b[s.i] {
		case ',':
			s.i++
			s.space()
		case ']':
			s.i++
			s.depth--
			return nil
		default:
			return s.fail("expected ',' or ']'")
		}
	}
}

// str scans a string at s.i (its opening quote). With decode it returns
// the string's value (for names, which must be compared as decoded).
func (s *jsonScanner) str(decode bool) (string, error) {
	s.i++
	start, escaped := s.i, false
	var out []byte
	for {
		if s.i == len(s.b) {
			return "", s.fail("unterminated string")
		}
		c := s.b[s.i]
		switch {
		case c == '"':
			v := ""
			if decode {
				if escaped {
					v = string(out)
				} else {
					v = string(s.b[start:s.i])
				}
			}
			s.i++
			return v, nil
		case c < 0x20:
			return "", s.fail("control character in a string")
		case c != '\\':
			if decode && escaped {
				out = append(out, c)
			}
			s.i++
			continue
		}
		// An escape.
		if decode && !escaped {
			out = append(out, s.b[start:s.i]...)
		}
		escaped = true
		if s.i+1 == len(s.b) {
			return "", s.fail("unterminated string")
		}
		switch e := s.b[s.i+1]; e {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			if decode {
				out = append(out, unescape(e))
			}
			s.i += 2
		case 'u':
			r, ok := s.hex4(s.i + 2)
			if !ok {
				return "", s.fail("bad \\u escape")
			}
			s.i += 6
			if utf16.IsSurrogate(r) {
				// Only a high surrogate followed by a low one is a character.
				low, ok := rune(-1), false
				if r < 0xdc00 && s.i+1 < len(s.b) && s.b[s.i] == '\\' && s.b[s.i+1] == 'u' {
					low, ok = s.hex4(s.i + 2)
				}
				if !ok || low < 0xdc00 || low > 0xdfff {
					return "", s.fail("lone surrogate in a \\u escape")
				}
				s.i += 6
				r = utf16.DecodeRune(r, low)
			}
			if decode {
				out = utf8.AppendRune(out, r)
			}
		default:
			return "", s.fail("bad escape")
		}
	}
}

// unescape is the byte a one-character escape stands for.
func unescape(e byte) byte {
	switch e {
	case 'b':
		return '\b'
	case 'f':
		return '\f'
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	case 't':
		return '\t'
	}
	return e // '"', '\\', '/'
}

// hex4 reads four hex digits at i.
func (s *jsonScanner) hex4(i int) (rune, bool) {
	if i+4 > len(s.b) {
		return 0, false
	}
	var r rune
	for _, c := range s.b[i : i+4] {
		var v byte
		switch {
		case c >= '0' && c <= '9':
			v = c - '0'
		case c >= 'a' && c <= 'f':
			v = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			v = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(v)
	}
	return r, true
}

func (s *jsonScanner) literal(word string) error {
	if len(s.b)-s.i < len(word) || string(s.b[s.i:s.i+len(word)]) != word {
		return s.fail("bad literal")
	}
	s.i += len(word)
	return nil
}

// number scans -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
func (s *jsonScanner) number() error {
	if s.b[s.i] == '-' {
		s.i++
	}
	switch {
	case s.i < len(s.b) && s.b[s.i] == '0':
		s.i++
	case s.digits() == 0:
		return s.fail("bad number")
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if s.digits() == 0 {
			return s.fail("bad number")
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if s.digits() == 0 {
			return s.fail("bad number")
		}
	}
	return nil
}

func (s *jsonScanner) digits() int {
	n := 0
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
		n++
	}
	return n
}
