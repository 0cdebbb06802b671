"""The payment service: Stripe PaymentIntents, refunds, webhooks, an audit log; no card data."""
