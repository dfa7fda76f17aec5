// Linear eye depth in metres: the view-space distance along the camera's optical axis (-z_view, interpolated
// perspective-correctly, so exact per pixel up to float32), written to the red channel of an RFloat target by
// DepthSensor, which clears the target to 0 first (0 = no geometry). Built-in render pipeline (RenderWithShader).
// Kept in player builds by the serialized reference XRAvatarSensors.DepthShader (set by the scene builder).
Shader "XRFed/LinearDepth"
{
    SubShader
    {
        Tags { "RenderType"="Opaque" }
        Pass
        {
            CGPROGRAM
            #pragma vertex vert
            #pragma fragment frag
            #include "UnityCG.cginc"
            struct v2f { float4 pos : SV_POSITION; float depth : TEXCOORD0; };
            v2f vert(appdata_base v)
            {
                v2f o;
                o.pos = UnityObjectToClipPos(v.vertex);
                o.depth = -UnityObjectToViewPos(v.vertex).z;
                return o;
            }
            float4 frag(v2f i) : SV_Target { return float4(i.depth, 0, 0, 1); }
            ENDCG
        }
    }
}
