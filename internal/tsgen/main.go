// Command tsgen writes the TypeScript declarations of turumba-realtime's
// Socket.IO contract and the Markdown tables of docs/events.md, both from
// realtime.DefaultContract (contract.go). Run it with `go generate` in the
// module root:
//
//	go run ./internal/tsgen -ts clients/typescript/realtime-events.ts -md docs/events.md
//
// A test in this directory fails when the committed files are stale.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/turumba/realtime"
)

func main() {
	tsPath := flag.String("ts", "clients/typescript/realtime-events.ts", "TypeScript output file")
	mdPath := flag.String("md", "docs/events.md", "Markdown output file")
	flag.Parse()
	if err := run(*tsPath, *mdPath); err != nil {
		fmt.Fprintln(os.Stderr, "tsgen:", err)
		os.Exit(1)
	}
}

func run(tsPath, mdPath string) error {
	ts, md, err := render(realtime.DefaultContract())
	if err != nil {
		return err
	}
	for path, data := range map[string][]byte{tsPath: ts, mdPath: md} {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// render returns the TypeScript and Markdown renderings of a contract.
func render(c realtime.Contract) (ts, md []byte, err error) {
	g := newGen(c)
	if ts, err = g.typeScript(); err != nil {
		return nil, nil, err
	}
	return ts, g.markdown(), nil
}

// gen holds what both renderings share: the Go types named in the contract
// and their TypeScript names.
type gen struct {
	c     realtime.Contract
	enums map[reflect.Type]string
	// structs are the Go struct types reached from client payloads, in the
	// order they were first met; each becomes an interface.
	structs []reflect.Type
	usedBy  map[reflect.Type][]string
	ackType reflect.Type
}

func newGen(c realtime.Contract) *gen {
	g := &gen{c: c, enums: map[reflect.Type]string{}, usedBy: map[reflect.Type][]string{}, ackType: reflect.TypeFor[realtime.Ack]()}
	for _, e := range c.Enums {
		if e.Go != nil {
			g.enums[e.Go] = e.Name
		}
	}
	return g
}

// tsType maps a Go type to TypeScript, registering structs it meets.
func (g *gen) tsType(t reflect.Type) (string, error) {
	if name, ok := g.enums[t]; ok {
		return name, nil
	}
	if t == reflect.TypeFor[time.Time]() {
		return "string", nil
	}
	switch t.Kind() {
	case reflect.String:
		return "string", nil
	case reflect.Bool:
		return "boolean", nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return "number", nil
	case reflect.Pointer:
		return g.tsType(t.Elem())
	case reflect.Slice, reflect.Array:
		elem, err := g.tsType(t.Elem())
		if err != nil {
			return "", err
		}
		return elem + "[]", nil
	case reflect.Map:
		if t.Key().Kind() != reflect.String {
			return "", fmt.Errorf("map key of %v must be a string", t)
		}
		elem, err := g.tsType(t.Elem())
		if err != nil {
			return "", err
		}
		return "Record<string, " + elem + ">", nil
	case reflect.Struct:
		if t.Name() == "" {
			return "", fmt.Errorf("anonymous struct %v has no name for TypeScript", t)
		}
		if !slices.Contains(g.structs, t) {
			g.structs = append(g.structs, t)
			if _, err := g.structFields(t); err != nil { // registers nested structs too
				return "", err
			}
		}
		return t.Name(), nil
	}
	return "", fmt.Errorf("no TypeScript type for Go type %v", t)
}

// jsonField is a struct field as encoding/json writes it.
type jsonField struct {
	name      string
	ts        string
	omitempty bool
}

func (g *gen) structFields(t reflect.Type) ([]jsonField, error) {
	var out []jsonField
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" {
			name = f.Name
		}
		if f.Anonymous {
			return nil, fmt.Errorf("%v: embedded field %s is not supported", t, f.Name)
		}
		ts, err := g.tsType(f.Type)
		if err != nil {
			return nil, fmt.Errorf("%v.%s: %w", t, f.Name, err)
		}
		out = append(out, jsonField{name: name, ts: ts, omitempty: slices.Contains(strings.Split(opts, ","), "omitempty")})
	}
	return out, nil
}

// ackField returns the TypeScript type of a field of realtime.Ack.
func (g *gen) ackField(name string) (string, error) {
	fields, err := g.structFields(g.ackType)
	if err != nil {
		return "", err
	}
	for _, f := range fields {
		if f.name == name {
			return f.ts, nil
		}
	}
	return "", fmt.Errorf("realtime.Ack has no field %q", name)
}

// ackShape is the TypeScript object type of a successful acknowledgement's
// fields besides ok.
func (g *gen) ackShape(ev realtime.ClientEventSpec) (string, error) {
	parts := make([]string, 0, len(ev.Ack))
	for _, a := range ev.Ack {
		ts, err := g.ackField(a.Name)
		if err != nil {
			return "", fmt.Errorf("%s: %w", ev.Name, err)
		}
		parts = append(parts, fieldDecl(a.Name, a.Optional, ts))
	}
	if len(parts) == 0 {
		return "{}", nil
	}
	return "{ " + strings.Join(parts, "; ") + " }", nil
}

func fieldDecl(name string, optional bool, ts string) string {
	if optional {
		return name + "?: " + ts
	}
	return name + ": " + ts
}

const header = "Code generated by internal/tsgen from contract.go; DO NOT EDIT. Run `go generate` in the module root."

func (g *gen) typeScript() ([]byte, error) {
	var b bytes.Buffer
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("// %s\n//\n", header)
	w("// The event contract of turumba-realtime's Socket.IO namespace %s, for\n", g.c.Namespace)
	w("// socket.io-client v4. This module declares types only.\n//\n")
	w("//   import { io, type Socket } from \"socket.io-client\";\n")
	w("//   import type { ServerToClientEvents, ClientToServerEvents } from \"./realtime-events\";\n")
	w("//   const socket: Socket<ServerToClientEvents, ClientToServerEvents> =\n")
	w("//     io(\"https://realtime.example.com%s\", { auth: (cb) => cb({ token: currentToken() }) });\n\n", g.c.Namespace)

	w("/** The Socket.IO namespace agents connect to. */\nexport type Namespace = %q;\n\n", g.c.Namespace)
	for _, e := range g.c.Enums {
		w("/**\n * %s\n *\n", e.Doc)
		vals := make([]string, len(e.Values))
		for i, v := range e.Values {
			w(" * - %q: %s\n", v.Value, v.Doc)
			vals[i] = fmt.Sprintf("%q", v.Value)
		}
		w(" */\nexport type %s =\n  | %s;\n\n", e.Name, strings.Join(vals, "\n  | "))
	}
	w(`/** A failed acknowledgement. */
export interface AckError {
  ok: false;
  error: ErrorCode;
  message: string;
}

/**
 * The acknowledgement of every client event: { ok: true, ...T } or an AckError.
 * Narrow on ok: if (res.ok) { res.account_id } else { res.error }.
 */
export type Ack<T extends object = {}> = ({ ok: true } & T) | AckError;

/** The handshake's auth object (or return it from an auth callback). */
export interface HandshakeAuth {
  token: string;
}

/** The data of a connect_error the server refused: err.data.code. */
export interface ConnectErrorData {
  code: ErrorCode;
}

`)
	w("// ---- Server -> client ----\n\n")
	for _, ev := range g.c.Server {
		w("/**\n * Payload of %s.", ev.Name)
		if ev.Doc != "" {
			w(" %s", ev.Doc)
		}
		w("\n *\n")
		for _, t := range ev.Triggers {
			w(" * - %s -> %s\n", triggerText(t), strings.Join(t.Rooms, ", "))
		}
		w(" */\nexport interface %s {\n", ev.TypeName())
		for _, f := range ev.Fields {
			if f.Doc != "" {
				w("  /** %s */\n", f.Doc)
			}
			w("  %s;\n", fieldDecl(f.Name, f.Optional, f.Type))
		}
		w("}\n\n")
	}
	w("/** Events the server sends; the first type parameter of Socket. */\nexport interface ServerToClientEvents {\n")
	for _, ev := range g.c.Server {
		w("  %q: (payload: %s) => void;\n", ev.Name, ev.TypeName())
	}
	w("}\n\n")

	w("// ---- Client -> server ----\n\n")
	var payloads []reflect.Type
	for _, ev := range g.c.Client {
		if ev.Payload == nil || ev.Payload.Kind() != reflect.Struct {
			return nil, fmt.Errorf("%s: payload must be a struct type", ev.Name)
		}
		if !slices.Contains(payloads, ev.Payload) {
			payloads = append(payloads, ev.Payload)
		}
		g.usedBy[ev.Payload] = append(g.usedBy[ev.Payload], ev.Name)
		if _, err := g.tsType(ev.Payload); err != nil {
			return nil, err
		}
	}
	acks := make([]string, len(g.c.Client))
	for i, ev := range g.c.Client {
		s, err := g.ackShape(ev)
		if err != nil {
			return nil, err
		}
		acks[i] = s
	}
	for _, t := range g.structs {
		fields, err := g.structFields(t)
		if err != nil {
			return nil, err
		}
		if uses := g.usedBy[t]; len(uses) > 0 {
			w("/** Payload of %s (realtime.%s). */\n", strings.Join(uses, ", "), t.Name())
		} else {
			w("/** realtime.%s, as it appears in acknowledgements. */\n", t.Name())
		}
		w("export interface %s {\n", t.Name())
		for _, f := range fields {
			w("  %s;\n", fieldDecl(f.name, f.omitempty, f.ts))
		}
		w("}\n\n")
	}
	w("/** What a successful acknowledgement of each client event carries besides ok. */\nexport interface ClientAcks {\n")
	for i, ev := range g.c.Client {
		w("  %q: %s;\n", ev.Name, acks[i])
	}
	w("}\n\n")
	w(`/**
 * The acknowledgement of client event E. Annotate with it where socket.io-client
 * cannot infer one: socket.timeout(ms).emitWithAck(...) resolves to any.
 */
export type AckOf<E extends keyof ClientAcks> = Ack<ClientAcks[E]>;

`)
	w("/** Events the client sends, with their acknowledgement; the second type parameter of Socket. */\nexport interface ClientToServerEvents {\n")
	for i, ev := range g.c.Client {
		if i > 0 {
			w("\n")
		}
		w("  /** %s */\n", ev.Doc)
		w("  %q: (payload: %s, ack: (res: Ack<ClientAcks[%q]>) => void) => void;\n", ev.Name, ev.Payload.Name(), ev.Name)
	}
	w("}\n")
	return b.Bytes(), nil
}

func triggerText(t realtime.Trigger) string {
	if len(t.Keys) == 0 {
		return t.Cause
	}
	return "routing key " + strings.Join(t.Keys, ", ")
}

func code(s string) string { return "`" + s + "`" }

func codes(ss []string) string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = code(s)
	}
	return strings.Join(out, ", ")
}

// rooms formats room templates as code and descriptions as text.
func rooms(rs []string) string {
	out := make([]string, len(rs))
	for i, r := range rs {
		tmpl, rest, _ := strings.Cut(r, " ")
		if !strings.Contains(tmpl, "{") {
			out[i] = r
			continue
		}
		out[i] = code(tmpl)
		if rest != "" {
			out[i] += " " + rest
		}
	}
	return strings.Join(out, ", ")
}

// markdown renders docs/events.md: the README's event tables.
func (g *gen) markdown() []byte {
	var b bytes.Buffer
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	cell := func(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
	w("<!-- %s -->\n\n", header)
	w("# Event contract (Socket.IO namespace `%s`)\n\n", g.c.Namespace)
	w("Generated from `contract.go` (the routing table `DefaultRoutes`, the Hub's own events and the client\n")
	w("event table). The same source generates the TypeScript declarations in\n")
	w("[`clients/typescript/realtime-events.ts`](../clients/typescript/realtime-events.ts); see\n")
	w("[frontend.md](frontend.md) for how to use them. Fields marked `?` may be absent (the router omits\n")
	w("fields the event lacks; nothing is ever `null`).\n\n")

	w("## Server -> client\n\n")
	w("| cause | client event | rooms | payload fields |\n|---|---|---|---|\n")
	for _, ev := range g.c.Server {
		for _, t := range ev.Triggers {
			cause := codes(t.Keys)
			if len(t.Keys) == 0 {
				cause = "(Hub) " + t.Cause
			}
			fields := routeFields(t.Fields)
			if len(t.Keys) == 0 {
				fields = fields[:0]
				for _, f := range ev.Fields {
					fields = append(fields, f.Name)
				}
			}
			w("| %s | `%s` | %s | %s |\n", cell(cause), ev.Name, cell(rooms(t.Rooms)), cell(strings.Join(fields, ", ")))
		}
	}
	w("\nA socket in two target rooms of one emit receives it once. Every event must carry `account_id`;\n")
	w("conversation routes also need `conversation_id`, and a room template whose field is absent is skipped.\n\n")

	w("### Payloads\n\n")
	for _, ev := range g.c.Server {
		w("`%s` (`%s`)", ev.Name, ev.TypeName())
		if ev.Doc != "" {
			w(": %s", ev.Doc)
		}
		w("\n\n| field | type | meaning |\n|---|---|---|\n")
		for _, f := range ev.Fields {
			name := f.Name
			if f.Optional {
				name += "?"
			}
			w("| `%s` | `%s` | %s |\n", name, cell(f.Type), cell(f.Doc))
		}
		w("\n")
	}

	w("## Client -> server\n\n")
	w("Every client event takes one object and answers through the acknowledgement, when the client asks for\n")
	w("one: `{ok: true, ...}` or `{ok: false, error, message}`.\n\n")
	w("| event | payload | acknowledgement when ok | effect |\n|---|---|---|---|\n")
	for _, ev := range g.c.Client {
		fields, _ := g.structFields(ev.Payload)
		ps := make([]string, len(fields))
		for i, f := range fields {
			ps[i] = fieldDecl(f.name, f.omitempty, f.ts)
		}
		acks := []string{"ok"}
		for _, a := range ev.Ack {
			name := a.Name
			if a.Optional {
				name += "?"
			}
			acks = append(acks, name)
		}
		w("| `%s` | `{%s}` | %s | %s |\n", ev.Name, cell(strings.Join(ps, ", ")), cell(strings.Join(acks, ", ")), cell(ev.Doc))
	}
	w("\n")
	for _, e := range g.c.Enums {
		w("## `%s`\n\n%s\n\n| value | meaning |\n|---|---|\n", e.Name, e.Doc)
		for _, v := range e.Values {
			w("| `%s` | %s |\n", v.Value, cell(v.Doc))
		}
		w("\n")
	}
	return append(bytes.TrimRight(b.Bytes(), "\n"), '\n')
}

// routeFields lists a route's fields as "name" or "name (= from)".
func routeFields(fields []realtime.Field) []string {
	out := make([]string, len(fields))
	for i, f := range fields {
		out[i] = f.Name
		if f.From != "" && f.From != f.Name {
			out[i] += " (= " + f.From + ")"
		}
	}
	return out
}
