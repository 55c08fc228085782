{
  "targets": [
    {
      "target_name": "icmp6",
      "sources": ["icmp6.c"],
      "conditions": [
        ["OS!='linux'", { "type": "none", "sources!": ["icmp6.c"] }]
      ],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"]
    }
  ]
}
