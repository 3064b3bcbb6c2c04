{{- define "iam-proxy.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "iam-proxy.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "iam-proxy.labels" -}}
{{ include "iam-proxy.selector" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The iam-proxy config: the user's, with the listeners, the OPA sidecar and the chart's Redis (rate
    limits, and the ended sessions of a `sessions` section that names no Redis of its own). */}}
{{- define "iam-proxy.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- $_ := set $config "listeners" (dict "workers" (int .Values.workers)
      "proxy" (dict "host" "0.0.0.0" "port" (int .Values.ports.proxy))
      "admin" (dict "host" "0.0.0.0" "port" (int .Values.ports.admin))) -}}
{{- if .Values.opa.enabled -}}
{{- $policy := get $config "policy" | default dict -}}
{{- $_ := set $policy "engine" "opa" -}}
{{- $_ := set $policy "opa" (dict "url" "http://127.0.0.1:8181") -}}
{{- $_ := unset $policy "dir" -}}
{{- $_ := set $config "policy" $policy -}}
{{- end -}}
{{- if .Values.redis.enabled -}}
{{- $limits := get $config "rate_limits" | default dict -}}
{{- $_ := set $limits "store" "redis" -}}
{{- $_ := set $limits "redis" (dict "url" (printf "redis://%s-redis:6379/0" (include "iam-proxy.fullname" .))) -}}
{{- $_ := set $config "rate_limits" $limits -}}
{{- if and (hasKey $config "sessions") (not (hasKey (get $config "sessions") "redis")) -}}
{{- $sessions := get $config "sessions" -}}
{{- $_ := set $sessions "redis" (dict "url" (printf "redis://%s-redis:6379/1" (include "iam-proxy.fullname" .))) -}}
{{- end -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}
