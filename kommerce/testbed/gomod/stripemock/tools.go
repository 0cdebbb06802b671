//go:build tools

// Package tools pins the stripe-mock command the test bed builds.
package tools

import _ "github.com/stripe/stripe-mock"
