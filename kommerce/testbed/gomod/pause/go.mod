// The Pod sandbox process of the real node.
module kommerce.local/testbed/pause

go 1.24.0
