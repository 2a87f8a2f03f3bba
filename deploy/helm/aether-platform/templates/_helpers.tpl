{{- define "aether.name" -}}{{ .Release.Name | trunc 40 | trimSuffix "-" }}{{- end -}}

{{- define "aether.labels" -}}
app.kubernetes.io/name: aether-platform
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The image of a colour: digest when pinned, else the colour's tag, else image.tag. */}}
{{- define "aether.image" -}}
{{- $root := index . 0 -}}{{- $color := index . 1 -}}
{{- $tag := (index $root.Values.colors $color).tag | default $root.Values.image.tag -}}
{{- if $root.Values.image.digest -}}{{ $root.Values.image.repository }}@{{ $root.Values.image.digest }}
{{- else -}}{{ $root.Values.image.repository }}:{{ $tag }}{{- end -}}
{{- end -}}

{{/* Items of the platform secret one component may read (as files under /var/run/aether/secrets). */}}
{{- define "aether.secretItems" -}}
{{- $component := . -}}
- {key: database-url, path: database-url}
{{- if not (has $component (list "migrate" "ops")) }}
- {key: redis-url, path: redis-url}
- {key: jwt-public-key, path: jwt-public-key}
{{- end }}
{{- if eq $component "accounts" }}
- {key: jwt-private-key, path: jwt-private-key}
{{- end }}
{{- if eq $component "reports" }}
- {key: audit-anchor-private-key, path: audit-anchor-private-key}
- {key: audit-anchor-public-key, path: audit-anchor-public-key}
{{- end }}
{{- if has $component (list "oms" "hedge" "risk") }}
- {key: {{ $component }}-client-secret, path: service-client-secret}
{{- end }}
{{- end -}}

{{- define "aether.secretEnv" -}}
{{- $component := . -}}
- {name: AETHER_DATABASE_URL_FILE, value: /var/run/aether/secrets/database-url}
{{- if not (has $component (list "migrate" "ops")) }}
- {name: AETHER_REDIS_URL_FILE, value: /var/run/aether/secrets/redis-url}
- {name: AETHER_JWT_PUBLIC_KEY_FILE, value: /var/run/aether/secrets/jwt-public-key}
{{- end }}
{{- if eq $component "accounts" }}
- {name: AETHER_JWT_PRIVATE_KEY_FILE, value: /var/run/aether/secrets/jwt-private-key}
{{- end }}
{{- if eq $component "reports" }}
- {name: AETHER_AUDIT_ANCHOR_PRIVATE_KEY_FILE, value: /var/run/aether/secrets/audit-anchor-private-key}
- {name: AETHER_AUDIT_ANCHOR_PUBLIC_KEY_FILE, value: /var/run/aether/secrets/audit-anchor-public-key}
{{- end }}
{{- if has $component (list "oms" "hedge" "risk") }}
- {name: AETHER_SERVICE_CLIENT_SECRET_FILE, value: /var/run/aether/secrets/service-client-secret}
{{- end }}
{{- end -}}

{{- define "aether.commonEnv" -}}
{{- range $name, $value := .Values.env }}
- {name: {{ $name }}, value: {{ $value | quote }}}
{{- end }}
- {name: AETHER_HOME, value: /tmp/aether}
- {name: HOME, value: /tmp}
{{- end -}}

{{/* Sha256 of the exchange accounts a pod mounts: a rotated key changes it and so rolls the pod. */}}
{{- define "aether.accountsChecksum" -}}
{{- toJson .Values.exchangeAccounts.accounts | sha256sum -}}
{{- end -}}

{{- define "aether.resources" -}}
{{- $root := index . 0 -}}{{- $own := index . 1 -}}
{{- toYaml (default $root.Values.defaultResources $own) -}}
{{- end -}}
