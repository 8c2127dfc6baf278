module local.invalid/kcp-pause

go 1.24
