//go:build tools

// Package tools pins the metrics-server command the test bed builds.
package tools

import _ "sigs.k8s.io/metrics-server/cmd/metrics-server"
