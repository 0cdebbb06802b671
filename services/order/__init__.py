"""The order service: cart, checkout and the order saga that reserves, charges and ships."""
