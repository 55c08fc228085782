{{/*
Names, labels and the settings several templates share. Labels: every object carries widescan.labels; the
selector labels (name, instance, component) are what Services, PodMonitors and NetworkPolicies select on.
*/}}

{{- define "widescan.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{/* Resource name prefix; short enough for every suffix used here (-worker-gpu, -redis-headless) to stay a DNS label. */}}
{{- define "widescan.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "widescan.namespace" -}}
{{- .Release.Namespace }}
{{- end }}

{{/* Selector labels of one component: (dict "context" $ "component" "operator"). */}}
{{- define "widescan.selectorLabels" -}}
app.kubernetes.io/name: {{ include "widescan.name" .context }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{/* All labels of one component's objects: (dict "context" $ "component" "operator"). */}}
{{- define "widescan.labels" -}}
{{ include "widescan.selectorLabels" . }}
app.kubernetes.io/part-of: widescan
app.kubernetes.io/version: {{ .context.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .context.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .context.Chart.Name .context.Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "widescan.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "widescan.redisImage" -}}
{{- $i := .Values.redis.image }}
{{- if $i.digest }}{{ printf "%s:%s@%s" $i.repository $i.tag $i.digest }}{{ else }}{{ printf "%s:%s" $i.repository $i.tag }}{{ end }}
{{- end }}

{{/* Secret names: the user's existing Secret, or the chart's own. */}}
{{- define "widescan.networkKeySecret" -}}
{{- .Values.networkKey.existingSecret | default (printf "%s-network" (include "widescan.fullname" .)) }}
{{- end }}

{{- define "widescan.tokensSecret" -}}
{{- .Values.tokens.existingSecret | default (printf "%s-tokens" (include "widescan.fullname" .)) }}
{{- end }}

{{- define "widescan.redisExternal" -}}
{{- if or .Values.redis.external.url .Values.redis.external.urlSecret.name }}true{{ end }}
{{- end }}

{{- define "widescan.operatorServiceAccount" -}}
{{- printf "%s-operator" (include "widescan.fullname" .) }}
{{- end }}

{{/* Listeners, workers, bootstrap and Redis: no Kubernetes API access, no token mounted. */}}
{{- define "widescan.workloadServiceAccount" -}}
{{- printf "%s-workload" (include "widescan.fullname" .) }}
{{- end }}

{{- define "widescan.bootstrapUrl" -}}
{{- printf "http://%s-bootstrap.%s.svc:%v" (include "widescan.fullname" .) (include "widescan.namespace" .) .Values.bootstrap.port }}
{{- end }}

{{/*
Environment giving a container WIDESCAN_REDIS_URL, as a YAML list of EnvVars. The same list goes to the worker
pools through the operator config (workerEnv). The built-in Redis's password is substituted from a Secret by
Kubernetes' $(VAR) expansion, so it never appears in a ConfigMap.
*/}}
{{- define "widescan.redisEnv" -}}
{{- $ext := .Values.redis.external }}
{{- if $ext.urlSecret.name }}
- name: WIDESCAN_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $ext.urlSecret.name }}
      key: {{ $ext.urlSecret.key }}
{{- else if $ext.url }}
- name: WIDESCAN_REDIS_URL
  value: {{ $ext.url | quote }}
{{- else }}
- name: WIDESCAN_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "widescan.fullname" . }}-redis
      key: password
- name: WIDESCAN_REDIS_URL
  value: {{ printf "redis://:$(WIDESCAN_REDIS_PASSWORD)@%s-redis.%s.svc:6379" (include "widescan.fullname" .) (include "widescan.namespace" .) | quote }}
{{- end }}
{{- end }}

{{/*
A Secret value generated once: the value given, else the one already in the cluster (lookup; empty under
`helm template`), else a random one. With helm.sh/resource-policy: keep on the Secret, upgrades and
reinstalls never replace a key clients already hold. (dict "context" $ "secret" NAME "key" KEY "value" GIVEN "length" N)
*/}}
{{- define "widescan.secretValue" -}}
{{- $existing := lookup "v1" "Secret" (include "widescan.namespace" .context) .secret }}
{{- if .value }}
{{- .value | b64enc }}
{{- else if and $existing $existing.data (hasKey $existing.data .key) }}
{{- index $existing.data .key }}
{{- else }}
{{- randAlphaNum (int .length) | b64enc }}
{{- end }}
{{- end }}

{{/* Union of where the enabled worker pools may run, for the listener: tolerations. */}}
{{- define "widescan.listenerTolerations" -}}
{{- $all := list }}
{{- range $name := list "gpu" "cpu" }}
{{- $pool := index $.Values.workers $name }}
{{- if $pool.enabled }}
{{- range $pool.tolerations }}
{{- $all = append $all . }}
{{- end }}
{{- end }}
{{- end }}
{{- with (uniq $all) }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/*
Union of where the enabled worker pools may run, for the listener: a required node affinity ORing the pools'
node selectors (one term per pool). A pool without a node selector may run anywhere, and then so must the
listener: no affinity.
*/}}
{{- define "widescan.listenerAffinity" -}}
{{- $terms := list }}
{{- $anywhere := false }}
{{- range $name := list "gpu" "cpu" }}
{{- $pool := index $.Values.workers $name }}
{{- if $pool.enabled }}
{{- if $pool.nodeSelector }}
{{- $exprs := list }}
{{- range $k, $v := $pool.nodeSelector }}
{{- $exprs = append $exprs (dict "key" $k "operator" "In" "values" (list $v)) }}
{{- end }}
{{- $terms = append $terms (dict "matchExpressions" $exprs) }}
{{- else }}
{{- $anywhere = true }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $terms (not $anywhere) }}
nodeAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    nodeSelectorTerms:
      {{- toYaml (uniq $terms) | nindent 6 }}
{{- end }}
{{- end }}

{{/* Pod and container security of the non-root components (operator, bootstrap): the image's user 10001. */}}
{{- define "widescan.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "widescan.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
What JSON Schema cannot say; rendered (as nothing) by the operator ConfigMap so that `helm install` and
`helm template` fail with the value's name and the fix.
*/}}
{{- define "widescan.validate" -}}
{{- $w := .Values.workers }}
{{- if not (or $w.gpu.enabled $w.cpu.enabled) }}
{{- fail "workers.gpu.enabled and workers.cpu.enabled are both false: no job could run; enable at least one pool" }}
{{- end }}
{{- range $name := list "gpu" "cpu" }}
{{- $pool := index $w $name }}
{{- if gt (int $pool.minReplicas) (int $pool.maxReplicas) }}
{{- fail (printf "workers.%s.maxReplicas (%v) must be ≥ workers.%s.minReplicas (%v); raise maxReplicas or lower minReplicas" $name $pool.maxReplicas $name $pool.minReplicas) }}
{{- end }}
{{- range $kind := list "limits" "requests" }}
{{- if hasKey (index ($pool.resources | default dict) $kind | default dict) "nvidia.com/gpu" }}
{{- fail (printf "workers.%s.resources.%s[\"nvidia.com/gpu\"]: set by the operator; use workers.gpu.gpusPerPod instead" $name $kind) }}
{{- end }}
{{- end }}
{{- end }}
{{- range $i, $e := $w.env }}
{{- if has $e.name (list "WIDESCAN_HARDWARE" "WIDESCAN_METRICS_PORT") }}
{{- fail (printf "workers.env[%d].name: %s is set by the operator per pool; use workers.metricsPort for the port" $i $e.name) }}
{{- end }}
{{- if has $e.name (list "WIDESCAN_REDIS_URL" "WIDESCAN_REDIS_PASSWORD") }}
{{- fail (printf "workers.env[%d].name: %s is set by the chart from redis.*; configure Redis there" $i $e.name) }}
{{- end }}
{{- if and (hasKey $e "value") (hasKey $e "valueFrom") }}
{{- fail (printf "workers.env[%d]: has both value and valueFrom; keep one" $i) }}
{{- end }}
{{- end }}
{{- range $role := list "listener" "admin" }}
{{- $t := index $.Values.tokens $role }}
{{- if and $t (or (lt (len $t) 16) (regexMatch "\\s" $t)) }}
{{- fail (printf "tokens.%s must be at least 16 characters without whitespace (e.g. `openssl rand -hex 32`), or empty to generate one" $role) }}
{{- end }}
{{- end }}
{{- if and .Values.tokens.listener (eq .Values.tokens.listener .Values.tokens.admin) }}
{{- fail "tokens.admin equals tokens.listener: give the admin a token of its own" }}
{{- end }}
{{- if and .Values.tokens.existingSecret (or .Values.tokens.listener .Values.tokens.admin) }}
{{- fail "tokens.existingSecret is set together with tokens.listener/admin: keep the tokens in the Secret, or leave existingSecret empty" }}
{{- end }}
{{- if and .Values.networkKey.existingSecret .Values.networkKey.value }}
{{- fail "networkKey.existingSecret and networkKey.value are both set: keep one" }}
{{- end }}
{{- if and (eq .Values.bootstrap.trustMode "authority") (not .Values.bootstrap.authorityKey.existingSecret) }}
{{- fail "bootstrap.trustMode authority needs bootstrap.authorityKey.existingSecret: a Secret with the Ed25519 PKCS#8 PEM key (openssl genpkey -algorithm ed25519)" }}
{{- end }}
{{- if and .Values.redis.external.url .Values.redis.external.urlSecret.name }}
{{- fail "redis.external.url and redis.external.urlSecret.name are both set: keep one" }}
{{- end }}
{{- if and .Values.redis.password (include "widescan.redisExternal" .) }}
{{- fail "redis.password is for the built-in Redis; with redis.external put the password in the URL" }}
{{- end }}
{{- if eq (int $w.metricsPort) (int .Values.listener.metricsPort) }}
{{- fail (printf "workers.metricsPort and listener.metricsPort are both %v: both are host ports on the same nodes; pick two" $w.metricsPort) }}
{{- end }}
{{- end }}

{{/*
The operator's configuration file (schema: operator/config.ts). The worker pools get the image, the Redis
environment and the workload ServiceAccount from here.
*/}}
{{- define "widescan.operatorConfig" -}}
{{- $w := .Values.workers }}
{{- $pools := dict }}
{{- range $name := list "gpu" "cpu" }}
{{- $p := index $w $name }}
{{- $pool := dict "enabled" $p.enabled "minReplicas" $p.minReplicas "maxReplicas" $p.maxReplicas "resources" ($p.resources | default dict) "nodeSelector" ($p.nodeSelector | default dict) "tolerations" ($p.tolerations | default list) }}
{{- with $p.image }}{{ $_ := set $pool "image" . }}{{ end }}
{{- if eq $name "gpu" }}{{ $_ := set $pool "gpusPerPod" $p.gpusPerPod }}{{ end }}
{{- $_ := set $pools $name $pool }}
{{- end }}
{{- $config := dict
  "namespace" (include "widescan.namespace" .)
  "image" (include "widescan.image" .)
  "imagePullPolicy" .Values.image.pullPolicy
  "imagePullSecrets" (.Values.imagePullSecrets | default list)
  "serviceAccountName" (include "widescan.workloadServiceAccount" .)
  "window" .Values.operator.window
  "fullLimitBits" .Values.operator.fullLimitBits
  "blocklist" (.Values.operator.blocklist | default list)
  "fallbackAfterSeconds" $w.fallbackAfterSeconds
  "statusIntervalSeconds" .Values.operator.statusIntervalSeconds
  "workerMetricsPort" $w.metricsPort
  "terminationGracePeriodSeconds" $w.terminationGracePeriodSeconds
  "workerEnv" (concat (include "widescan.redisEnv" . | fromYamlArray) ($w.env | default list))
  "listenerSelector" (include "widescan.selectorLabels" (dict "context" . "component" "listener") | fromYaml)
  "pools" $pools
}}
{{- toYaml $config }}
{{- end }}
