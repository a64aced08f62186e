//go:build tools

// Package tools pins the modules the subpackages are built from while they
// are being written, so that go.mod stays stable; it is never compiled.
package tools

import (
	_ "github.com/MicahParks/keyfunc/v3"
	_ "github.com/alicebob/miniredis/v2"
	_ "github.com/golang-jwt/jwt/v5"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/rabbitmq/amqp091-go"
	_ "github.com/redis/go-redis/v9"
	_ "github.com/zishang520/socket.io/adapters/redis/v3"
	_ "github.com/zishang520/socket.io/clients/socket/v3"
	_ "github.com/zishang520/socket.io/servers/engine/v3"
	_ "github.com/zishang520/socket.io/servers/socket/v3"
	_ "golang.org/x/time/rate"
)
